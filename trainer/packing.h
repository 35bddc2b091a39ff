/* packing.h — how the samples of one rollout become optimizer steps, data-
 * parallel shares and micro-batches.
 * (Neither --global-batch-size nor --num-steps-per-rollout given: one step.)
 *
 * A rollout of n samples is cut into `--num-steps-per-rollout` optimizer steps
 * of `--global-batch-size` consecutive samples (slime: one of the two may be
 * derived from the other; they must divide n exactly). Within a step:
 *
 * Dynamic mode (`--use-dynamic-batch-size --max-tokens-per-gpu N`):
 *  1. The step's samples are split over the dp ranks by token count with the
 *     Karmarkar–Karp largest differencing method (k-way), so that the ranks'
 *     token totals are as equal as KK finds.
 *  2. M = the largest number of bins first-fit-decreasing needs, over the
 *     ranks, to pack each rank's samples into micro-batches of <= N tokens
 *     (a sample longer than N takes a bin alone: never truncated). Every rank
 *     gets exactly M micro-batches: its samples are partitioned into M parts
 *     with KK (balanced micro-batches); if KK's partition breaks the budget,
 *     the rank's first-fit-decreasing packing is used instead, padded with
 *     EMPTY micro-batches up to M. A rank with fewer samples than M also gets
 *     empty micro-batches. Empty micro-batches contribute nothing and may be
 *     skipped; they exist so that every rank runs the same count.
 * Static mode (`--micro-batch-size B`): each rank gets global_batch_size/dp
 *     consecutive samples (must divide), cut into micro-batches of B samples
 *     (the last one may be shorter); every rank has the same count.
 *
 * Every rank computes the same plan from the same global list of lengths, so
 * no communication is needed. The loss normaliser of a step is the global
 * one (loss.h), so none of these choices changes the gradient.
 *
 * Leaves out: pipeline-parallel constraints, context-parallel splitting,
 * cost models other than token count (attention's quadratic term).
 */
#ifndef QN_TRAINER_PACKING_H
#define QN_TRAINER_PACKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

typedef struct qn_pack_cfg {
    int64_t global_batch_size;     /* samples per optimizer step; 0: n / num_steps */
    int64_t num_steps_per_rollout; /* 0: n / global_batch_size */
    int64_t dp_size;               /* data-parallel ranks, >= 1 */
    bool dynamic;                  /* --use-dynamic-batch-size */
    int64_t max_tokens_per_gpu;    /* dynamic mode budget, >= 1 */
    int64_t micro_batch_size;      /* static mode, >= 1 */
} qn_pack_cfg;

/* The plan. Micro-batch (step s, rank r, j) is number
 * mb_start[s] + r * n_micro[s] + j; its samples are
 * sample_idx[mb_off[mb] .. mb_off[mb+1]) (indices into the rollout). */
typedef struct qn_pack_plan {
    int64_t n_steps, dp_size, global_batch_size;
    int64_t *n_micro;    /* [n_steps] micro-batches per rank in step s */
    int64_t *mb_start;   /* [n_steps + 1] */
    int64_t *mb_off;     /* [mb_start[n_steps] + 1] */
    int64_t *sample_idx; /* [n_samples] */
    int64_t *mb_tokens;  /* [mb_start[n_steps]] token total of each micro-batch */
} qn_pack_plan;

/* Builds the plan for a rollout with n samples of lengths len[0..n) (tokens
 * as the trainer will run them, prompt + response). QN_ERR_INVALID/RANGE with
 * a message naming the flag when sizes do not divide or are out of range.
 * On success *plan owns its arrays (qn_pack_plan_free). */
qn_status qn_pack_plan_build(const qn_pack_cfg *cfg, const int64_t *len, int64_t n,
                             qn_pack_plan *plan);
void qn_pack_plan_free(qn_pack_plan *plan);

/* Micro-batch index of (step, rank, j). */
static inline int64_t qn_pack_mb(const qn_pack_plan *p, int64_t step, int64_t rank, int64_t j) {
    return p->mb_start[step] + rank * p->n_micro[step] + j;
}

/* k-way Karmarkar–Karp partition of n weights into k parts: part[i] in [0, k)
 * for each item. Deterministic (ties broken by index). Exposed for tests and
 * the balance comparison. */
qn_status qn_pack_kk(const int64_t *w, int64_t n, int64_t k, int64_t *part);

/* First-fit decreasing into bins of capacity cap (an item larger than cap
 * opens a bin of its own). bin[i] receives the bin of item i; returns the
 * number of bins in *n_bins. */
qn_status qn_pack_ffd(const int64_t *w, int64_t n, int64_t cap, int64_t *bin, int64_t *n_bins);

#endif /* QN_TRAINER_PACKING_H */
