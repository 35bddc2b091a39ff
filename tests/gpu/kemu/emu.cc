// emu.cc — the block scheduler of the kernel emulation (inc/cuda_runtime.h).
// A block's threads are coroutines on private stacks (makecontext for the
// start, _setjmp/_longjmp to switch, which skips the signal-mask syscalls of
// swapcontext). Each pass resumes every live thread once; a thread runs
// until its next barrier or its end. When all live threads wait at the same
// barrier they are released together; __syncthreads_count / __ballot_sync
// read what every thread contributed at that barrier. A thread that ends
// while others wait at a barrier, or threads waiting at different barriers,
// abort the run: the kernels emulated here never do either.
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <vector>

#include "cuda_runtime.h"

qn_emu_uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

struct emu_thread {
    ucontext_t ctx;
    jmp_buf env;
    int started, done;
    unsigned gen; /* the barrier it waits at */
};

const size_t STACK = 256 * 1024;
jmp_buf g_sched;
std::vector<emu_thread> g_thr;
std::vector<char *> g_stacks;
const std::function<void()> *g_fn;
int g_cur;
unsigned g_gen;
long long g_count[2];          /* __syncthreads_count sums, by barrier parity */
std::vector<int> g_ballot[2];  /* __ballot_sync predicates, by barrier parity */

void entry(void) {
    (*g_fn)();
    g_thr[g_cur].done = 1;
    _longjmp(g_sched, 1);
}

void arrive(int pred) {
    emu_thread &t = g_thr[g_cur];
    t.gen = g_gen;
    g_count[g_gen & 1] += pred;
    g_ballot[g_gen & 1][g_cur] = pred;
    if (!_setjmp(t.env)) _longjmp(g_sched, 1);
}

void fatal(const char *what) {
    fprintf(stderr, "kemu: %s (block %u,%u,%u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z);
    abort();
}

}  // namespace

void __syncthreads(void) { arrive(0); }

int __syncthreads_count(int pred) {
    arrive(pred != 0);
    return (int)g_count[g_thr[g_cur].gen & 1];
}

unsigned __ballot_sync(unsigned mask, int pred) {
    arrive(pred != 0);
    unsigned gen = g_thr[g_cur].gen, w0 = (unsigned)g_cur & ~31u, b = 0;
    for (unsigned l = 0; l < 32 && w0 + l < g_thr.size(); l++)
        if (g_ballot[gen & 1][w0 + l]) b |= 1u << l;
    return b & mask;
}

void emu_launch(dim3 grid, dim3 block, const std::function<void()> &fn) {
    if (block.y != 1 || block.z != 1) fatal("only 1-D blocks are emulated");
    const int nt = (int)block.x;
    blockDim = block;
    gridDim = grid;
    g_fn = &fn;
    while ((int)g_stacks.size() < nt) {
        char *s = (char *)malloc(STACK);
        if (!s) fatal("out of memory for thread stacks");
        g_stacks.push_back(s);
    }
    g_thr.assign(nt, emu_thread{});
    g_ballot[0].assign(nt, 0);
    g_ballot[1].assign(nt, 0);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                for (int i = 0; i < nt; i++) {
                    emu_thread &t = g_thr[i];
                    t.started = t.done = 0;
                    getcontext(&t.ctx);
                    t.ctx.uc_stack.ss_sp = g_stacks[i];
                    t.ctx.uc_stack.ss_size = STACK;
                    t.ctx.uc_link = NULL;
                    makecontext(&t.ctx, entry, 0);
                }
                g_gen = 0;
                g_count[0] = g_count[1] = 0;
                for (;;) {
                    int alive = 0, ended = 0;
                    for (int i = 0; i < nt; i++) {
                        if (g_thr[i].done) continue;
                        g_cur = i;
                        threadIdx = {(unsigned)i, 0, 0};
                        if (!_setjmp(g_sched)) {
                            if (!g_thr[i].started) {
                                g_thr[i].started = 1;
                                setcontext(&g_thr[i].ctx);
                            }
                            _longjmp(g_thr[i].env, 1);
                        }
                        if (g_thr[i].done) ended++;
                        else alive++;
                    }
                    if (!alive) break;
                    if (ended) fatal("a thread ended while others wait at a barrier");
                    for (int i = 0; i < nt; i++)
                        if (!g_thr[i].done && g_thr[i].gen != g_gen)
                            fatal("threads wait at different barriers");
                    g_gen++;
                    g_count[g_gen & 1] = 0;
                }
            }
}
