/* advantages.h — GRPO advantages (`--advantage-estimator grpo`): per group of
 * samples answering the same prompt, A = (r - mean) / (std + 1e-6) with the
 * unbiased (n - 1) standard deviation, or A = r - mean with
 * `--disable-grpo-std-normalization` (Dr. GRPO); then the sample's advantage
 * is broadcast to each of its response tokens.
 *
 * Leaves out: the other slime estimators (gspo, reinforce++, ppo/GAE, rloo),
 * `--normalize-advantages` whitening, and reward normalisation of non-GRPO
 * estimators. Arithmetic is double.
 */
#ifndef QN_TRAINER_ADVANTAGES_H
#define QN_TRAINER_ADVANTAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

#define QN_GRPO_STD_EPS 1e-6

/* Computes one advantage per sample. rewards[i] belongs to group group[i]
 * (any int64 ids; members of a group need not be adjacent). With
 * normalize_std, adv[i] = (r_i - mean_g) / (std_g + 1e-6) where std_g is the
 * unbiased standard deviation of the group; a group of ONE sample has no
 * unbiased std (torch would give NaN) and is defined here to have std 0, so
 * its advantage is 0 / 1e-6 = 0. Without normalize_std, adv[i] = r_i - mean_g.
 * QN_ERR_INVALID for a non-finite reward (naming the sample index); adv is
 * then unspecified. n == 0 is fine. O(n log n) time, O(n) scratch. */
qn_status qn_adv_grpo(const double *rewards, const int64_t *group, size_t n, bool normalize_std,
                      double *adv);

/* Broadcasts per-sample advantages to tokens: for sample i, tokens
 * [cu_tokens[i], cu_tokens[i+1]) of out get adv[i]. cu_tokens has n+1
 * non-decreasing entries starting at 0. */
void qn_adv_broadcast(const double *adv, const int64_t *cu_tokens, size_t n, float *out);

#endif /* QN_TRAINER_ADVANTAGES_H */
