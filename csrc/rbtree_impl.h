/*
 * rbtree_impl.h - a red-black tree over records named by uint32 indices
 * (0 is "nil"), instantiated once per tree type by including this file
 * with these macros defined (each may use a variable `m`, the machine):
 *
 *   RB_FN(name)     name of a generated function
 *   RB_L(i) RB_R(i) RB_P(i)   lvalues: left, right, parent index of i
 *   RB_RED(i)       nonzero if i is red (never called with 0)
 *   RB_SET_RED(i) RB_SET_BLACK(i) RB_COPY_COLOR(dst, src)
 *
 * The caller descends the tree itself (comparing page contents), links the
 * new node as a red leaf (RB_FN(link)), and calls RB_FN(insert_color).
 * Generated: link, insert_color, erase, replace.  Same algorithms as any
 * textbook red-black tree (CLRS chapter 13); nil is black and never written.
 */
#define RB_IS_RED(i) ((i) && RB_RED(i))

static void RB_FN(rotate_left)(ke_machine *m, uint32_t *root, uint32_t x)
{
    uint32_t y = RB_R(x), p = RB_P(x);
    RB_R(x) = RB_L(y);
    if (RB_L(y))
        RB_P(RB_L(y)) = x;
    RB_P(y) = p;
    if (!p)
        *root = y;
    else if (x == RB_L(p))
        RB_L(p) = y;
    else
        RB_R(p) = y;
    RB_L(y) = x;
    RB_P(x) = y;
}

static void RB_FN(rotate_right)(ke_machine *m, uint32_t *root, uint32_t x)
{
    uint32_t y = RB_L(x), p = RB_P(x);
    RB_L(x) = RB_R(y);
    if (RB_R(y))
        RB_P(RB_R(y)) = x;
    RB_P(y) = p;
    if (!p)
        *root = y;
    else if (x == RB_R(p))
        RB_R(p) = y;
    else
        RB_L(p) = y;
    RB_R(y) = x;
    RB_P(x) = y;
}

/* Links node as a red leaf under parent (0: the root), on the left if go_left. */
static void RB_FN(link)(ke_machine *m, uint32_t *root, uint32_t node,
                        uint32_t parent, int go_left)
{
    RB_L(node) = RB_R(node) = 0;
    RB_P(node) = parent;
    RB_SET_RED(node);
    if (!parent)
        *root = node;
    else if (go_left)
        RB_L(parent) = node;
    else
        RB_R(parent) = node;
}

static void RB_FN(insert_color)(ke_machine *m, uint32_t *root, uint32_t z)
{
    uint32_t p, g, u;
    while ((p = RB_P(z)) && RB_RED(p)) {
        g = RB_P(p);
        if (p == RB_L(g)) {
            u = RB_R(g);
            if (RB_IS_RED(u)) {
                RB_SET_BLACK(p);
                RB_SET_BLACK(u);
                RB_SET_RED(g);
                z = g;
                continue;
            }
            if (z == RB_R(p)) {
                RB_FN(rotate_left)(m, root, p);
                z = p;
                p = RB_P(z);
            }
            RB_SET_BLACK(p);
            RB_SET_RED(g);
            RB_FN(rotate_right)(m, root, g);
        } else {
            u = RB_L(g);
            if (RB_IS_RED(u)) {
                RB_SET_BLACK(p);
                RB_SET_BLACK(u);
                RB_SET_RED(g);
                z = g;
                continue;
            }
            if (z == RB_L(p)) {
                RB_FN(rotate_right)(m, root, p);
                z = p;
                p = RB_P(z);
            }
            RB_SET_BLACK(p);
            RB_SET_RED(g);
            RB_FN(rotate_left)(m, root, g);
        }
    }
    RB_SET_BLACK(*root);
}

/* Puts `repl` (not in the tree) where `old` is, with old's colour. */
static void RB_FN(replace)(ke_machine *m, uint32_t *root, uint32_t old,
                           uint32_t repl)
{
    uint32_t p = RB_P(old);
    RB_L(repl) = RB_L(old);
    RB_R(repl) = RB_R(old);
    RB_P(repl) = p;
    RB_COPY_COLOR(repl, old);
    if (!p)
        *root = repl;
    else if (RB_L(p) == old)
        RB_L(p) = repl;
    else
        RB_R(p) = repl;
    if (RB_L(repl))
        RB_P(RB_L(repl)) = repl;
    if (RB_R(repl))
        RB_P(RB_R(repl)) = repl;
}

static void RB_FN(erase_color)(ke_machine *m, uint32_t *root, uint32_t x,
                               uint32_t xp)
{
    uint32_t w;
    while (x != *root && !RB_IS_RED(x)) {
        if (x == RB_L(xp)) {
            w = RB_R(xp);
            if (RB_IS_RED(w)) {
                RB_SET_BLACK(w);
                RB_SET_RED(xp);
                RB_FN(rotate_left)(m, root, xp);
                w = RB_R(xp);
            }
            if (!RB_IS_RED(RB_L(w)) && !RB_IS_RED(RB_R(w))) {
                RB_SET_RED(w);
                x = xp;
                xp = RB_P(x);
            } else {
                if (!RB_IS_RED(RB_R(w))) {
                    RB_SET_BLACK(RB_L(w));
                    RB_SET_RED(w);
                    RB_FN(rotate_right)(m, root, w);
                    w = RB_R(xp);
                }
                RB_COPY_COLOR(w, xp);
                RB_SET_BLACK(xp);
                RB_SET_BLACK(RB_R(w));
                RB_FN(rotate_left)(m, root, xp);
                x = *root;
                break;
            }
        } else {
            w = RB_L(xp);
            if (RB_IS_RED(w)) {
                RB_SET_BLACK(w);
                RB_SET_RED(xp);
                RB_FN(rotate_right)(m, root, xp);
                w = RB_L(xp);
            }
            if (!RB_IS_RED(RB_L(w)) && !RB_IS_RED(RB_R(w))) {
                RB_SET_RED(w);
                x = xp;
                xp = RB_P(x);
            } else {
                if (!RB_IS_RED(RB_L(w))) {
                    RB_SET_BLACK(RB_R(w));
                    RB_SET_RED(w);
                    RB_FN(rotate_left)(m, root, w);
                    w = RB_L(xp);
                }
                RB_COPY_COLOR(w, xp);
                RB_SET_BLACK(xp);
                RB_SET_BLACK(RB_L(w));
                RB_FN(rotate_right)(m, root, xp);
                x = *root;
                break;
            }
        }
    }
    if (x)
        RB_SET_BLACK(x);
}

static void RB_FN(erase)(ke_machine *m, uint32_t *root, uint32_t z)
{
    uint32_t y = z, x, xp;
    int y_was_red;
    if (RB_L(z) && RB_R(z)) {
        y = RB_R(z);
        while (RB_L(y))
            y = RB_L(y);
    }
    x = RB_L(y) ? RB_L(y) : RB_R(y);
    xp = RB_P(y);
    y_was_red = RB_RED(y) != 0;
    if (x)
        RB_P(x) = xp;
    if (!xp)
        *root = x;
    else if (y == RB_L(xp))
        RB_L(xp) = x;
    else
        RB_R(xp) = x;
    if (y != z) {
        if (xp == z)
            xp = y;
        RB_FN(replace)(m, root, z, y);
    }
    if (!y_was_red)
        RB_FN(erase_color)(m, root, x, xp);
}

#undef RB_IS_RED
