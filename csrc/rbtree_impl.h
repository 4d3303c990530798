/*
 * rbtree_impl.h - a red-black tree over records named by handles (a struct
 * holding a uint32_t idx, 0 is "nil"; see internal.h), instantiated once
 * per tree type by including this file with these macros defined (each
 * may use a variable `m`, the machine); it #undefs them at its end:
 *
 *   RB_FN(name)        name of a generated function
 *   RB_T               the handle type
 *   RB_LINK(x, k)      lvalue: child k of x (0 left, 1 right), or with
 *                      k = RB_PARENT its parent
 *   RB_RED(x)          nonzero if x is red (never called with nil)
 *   RB_SET_COLOR(x, red)
 *
 * The caller descends the tree itself (comparing page contents), links the
 * new node as a red leaf (RB_FN(link)), and calls RB_FN(insert_color).
 * Generated: link, insert_color, erase, replace.  Same algorithms as any
 * textbook red-black tree (CLRS chapter 13; Linux's lib/rbtree.c does the
 * same with pointers), nil black and never written.  The textbook writes
 * each fix-up twice, once per mirror image; here it is written once, for
 * the side `dir` the case is on (0 where the textbook's is left), !dir
 * being the other.
 */
#define RB_PARENT 2
#define RB_P(x) RB_LINK(x, RB_PARENT)
#define RB_IS(x) ((x).idx != 0)
#define RB_SAME(a, b) ((a).idx == (b).idx)
#define RB_IS_RED(x) (RB_IS(x) && RB_RED(x))
#define RB_NIL ((RB_T){0})

/* Puts `repl` where `old` hangs under p (p nil: at the root). */
static inline void RB_FN(replace_child)(ke_machine *m, RB_T *root, RB_T p,
                                        RB_T old, RB_T repl)
{
    if (!RB_IS(p))
        *root = repl;
    else
        RB_LINK(p, RB_SAME(RB_LINK(p, 0), old) ? 0 : 1) = repl;
}

/* Rotates x down to side dir, its child on the other side taking its place. */
static void RB_FN(rotate)(ke_machine *m, RB_T *root, RB_T x, int dir)
{
    RB_T y = RB_LINK(x, !dir);
    RB_LINK(x, !dir) = RB_LINK(y, dir);
    if (RB_IS(RB_LINK(y, dir)))
        RB_P(RB_LINK(y, dir)) = x;
    RB_P(y) = RB_P(x);
    RB_FN(replace_child)(m, root, RB_P(x), x, y);
    RB_LINK(y, dir) = x;
    RB_P(x) = y;
}

/* Links node as a red leaf under parent (nil: the root), on side dir. */
static void RB_FN(link)(ke_machine *m, RB_T *root, RB_T node, RB_T parent,
                        int dir)
{
    RB_LINK(node, 0) = RB_LINK(node, 1) = RB_NIL;
    RB_P(node) = parent;
    RB_SET_COLOR(node, 1);
    if (!RB_IS(parent))
        *root = node;
    else
        RB_LINK(parent, dir) = node;
}

static void RB_FN(insert_color)(ke_machine *m, RB_T *root, RB_T z)
{
    RB_T p, g, u;
    while (RB_IS(p = RB_P(z)) && RB_RED(p)) {
        int dir;
        g = RB_P(p);
        dir = RB_SAME(p, RB_LINK(g, 0)) ? 0 : 1; /* p's side under g */
        u = RB_LINK(g, !dir);
        if (RB_IS_RED(u)) {
            RB_SET_COLOR(p, 0);
            RB_SET_COLOR(u, 0);
            RB_SET_COLOR(g, 1);
            z = g;
            continue;
        }
        if (RB_SAME(z, RB_LINK(p, !dir))) {
            RB_FN(rotate)(m, root, p, dir);
            z = p;
            p = RB_P(z);
        }
        RB_SET_COLOR(p, 0);
        RB_SET_COLOR(g, 1);
        RB_FN(rotate)(m, root, g, !dir);
    }
    RB_SET_COLOR(*root, 0);
}

/* Puts `repl` (not in the tree) where `old` is, with old's colour. */
static void RB_FN(replace)(ke_machine *m, RB_T *root, RB_T old, RB_T repl)
{
    RB_LINK(repl, 0) = RB_LINK(old, 0);
    RB_LINK(repl, 1) = RB_LINK(old, 1);
    RB_P(repl) = RB_P(old);
    RB_SET_COLOR(repl, RB_RED(old) != 0);
    RB_FN(replace_child)(m, root, RB_P(old), old, repl);
    for (int k = 0; k < 2; k++)
        if (RB_IS(RB_LINK(repl, k)))
            RB_P(RB_LINK(repl, k)) = repl;
}

static void RB_FN(erase_color)(ke_machine *m, RB_T *root, RB_T x, RB_T xp)
{
    RB_T w;
    while (!RB_SAME(x, *root) && !RB_IS_RED(x)) {
        int dir = RB_SAME(x, RB_LINK(xp, 0)) ? 0 : 1; /* x's side under xp */
        w = RB_LINK(xp, !dir);
        if (RB_IS_RED(w)) {
            RB_SET_COLOR(w, 0);
            RB_SET_COLOR(xp, 1);
            RB_FN(rotate)(m, root, xp, dir);
            w = RB_LINK(xp, !dir);
        }
        if (!RB_IS_RED(RB_LINK(w, 0)) && !RB_IS_RED(RB_LINK(w, 1))) {
            RB_SET_COLOR(w, 1);
            x = xp;
            xp = RB_P(x);
            continue;
        }
        if (!RB_IS_RED(RB_LINK(w, !dir))) {
            RB_SET_COLOR(RB_LINK(w, dir), 0);
            RB_SET_COLOR(w, 1);
            RB_FN(rotate)(m, root, w, !dir);
            w = RB_LINK(xp, !dir);
        }
        RB_SET_COLOR(w, RB_RED(xp) != 0);
        RB_SET_COLOR(xp, 0);
        RB_SET_COLOR(RB_LINK(w, !dir), 0);
        RB_FN(rotate)(m, root, xp, dir);
        x = *root;
        break;
    }
    if (RB_IS(x))
        RB_SET_COLOR(x, 0);
}

static void RB_FN(erase)(ke_machine *m, RB_T *root, RB_T z)
{
    RB_T y = z, x, xp;
    int y_was_red;
    if (RB_IS(RB_LINK(z, 0)) && RB_IS(RB_LINK(z, 1))) {
        y = RB_LINK(z, 1);
        while (RB_IS(RB_LINK(y, 0)))
            y = RB_LINK(y, 0);
    }
    x = RB_IS(RB_LINK(y, 0)) ? RB_LINK(y, 0) : RB_LINK(y, 1);
    xp = RB_P(y);
    y_was_red = RB_RED(y) != 0;
    if (RB_IS(x))
        RB_P(x) = xp;
    RB_FN(replace_child)(m, root, xp, y, x);
    if (!RB_SAME(y, z)) {
        if (RB_SAME(xp, z))
            xp = y;
        RB_FN(replace)(m, root, z, y);
    }
    if (!y_was_red)
        RB_FN(erase_color)(m, root, x, xp);
}

#undef RB_PARENT
#undef RB_P
#undef RB_IS
#undef RB_SAME
#undef RB_IS_RED
#undef RB_NIL
#undef RB_FN
#undef RB_T
#undef RB_LINK
#undef RB_RED
#undef RB_SET_COLOR
