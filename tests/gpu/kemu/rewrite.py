#!/usr/bin/env python3
"""rewrite.py IN.cu OUT.cc — turns every kernel launch
    name<targs><<<grid, block[, shmem[, stream]]>>>(args);
into
    emu_launch(dim3(grid), dim3(block), [&]() { name<targs>(args); });
so that a .cu file compiles as host C++ against tests/gpu/kemu/inc. Nothing
else changes (line numbers of code after a multi-line launch shift by the
lines the launch loses)."""
import sys


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def main():
    src = open(sys.argv[1]).read()
    out, i = [], 0
    while True:
        j = src.find('<<<', i)
        if j < 0:
            out.append(src[i:])
            break
        k = j - 1  # walk back over whitespace, template arguments, the name
        while src[k].isspace():
            k -= 1
        if src[k] == '>':
            depth = 0
            while True:
                if src[k] == '>':
                    depth += 1
                elif src[k] == '<':
                    depth -= 1
                    if depth == 0:
                        break
                k -= 1
            k -= 1
        while src[k].isalnum() or src[k] == '_':
            k -= 1
        start = k + 1
        name = ' '.join(src[start:j].split())
        e = src.find('>>>', j)
        cfg = split_top(src[j + 3:e])
        p = e + 3
        while src[p].isspace():
            p += 1
        if src[p] != '(':
            sys.exit('rewrite.py: %s: no argument list after a launch of %s' % (sys.argv[1], name))
        depth, q = 0, p
        while True:
            if src[q] == '(':
                depth += 1
            elif src[q] == ')':
                depth -= 1
                if depth == 0:
                    break
            q += 1
        r = q + 1
        while src[r].isspace():
            r += 1
        if src[r] != ';':
            sys.exit('rewrite.py: %s: launch of %s not followed by ;' % (sys.argv[1], name))
        out.append(src[i:start])
        out.append('emu_launch(dim3(%s), dim3(%s), [&]() { %s(%s); });'
                   % (cfg[0], cfg[1], name, src[p + 1:q]))
        i = r + 1
    open(sys.argv[2], 'w').write(''.join(out))


main()
