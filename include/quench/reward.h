/* reward.h — the quench reward plugin ABI (the only header a plugin needs).
 *
 * A reward plugin is a shared object that exports one or more versioned
 * tables of function pointers. quench looks for the symbol
 * `<base>_v<N>` for every ABI version N it knows, newest first, and uses the
 * first one it finds; <base> is "qn_reward_plugin" unless the user names
 * another one (`--custom-rm-path my.so:my_table`). A plugin may export several
 * versions so that older and newer quench binaries can both load it. A table
 * whose `abi_version` field disagrees with its symbol name, or whose
 * `struct_size` is smaller than the version's size, is refused. The table
 * type of version N is qn_reward_api_vN.
 *
 * Version 1 (this header):
 *
 *   #include <quench/reward.h>
 *
 *   static int my_score(void *state, const qn_reward_sample *s, qn_reward_score *out) {
 *       out->value = strstr(s->response, s->label) ? 1.0 : 0.0;
 *       return QN_REWARD_OK;
 *   }
 *   const qn_reward_api_v1 qn_reward_plugin_v1 = {
 *       .abi_version = 1, .struct_size = sizeof(qn_reward_api_v1),
 *       .name = "contains-label", .score = my_score,
 *   };
 *
 * Entry points (all but `score` may be NULL):
 *   init        called once per process that scores (each isolation worker
 *               calls it after it starts), with the user's config string
 *               (`--rm-config`, "" when not given). It stores its state in
 *               *state and returns QN_REWARD_OK, or writes a message into err
 *               (err_cap bytes, always NUL-terminated by quench) and returns
 *               QN_REWARD_ERROR, which stops the job before any sample runs.
 *   score       scores one sample. It fills *out (quench zeroes it first) and
 *               returns QN_REWARD_OK, or QN_REWARD_ERROR with a short reason
 *               in out->message. It must be safe to call again after it
 *               returned an error.
 *   score_group optional: scores the n samples of one prompt's group at once
 *               (out has n entries), e.g. for rewards that rank the samples
 *               against each other. When present, quench calls it instead of
 *               score for every group; the per-sample timeout is multiplied
 *               by n. Its return value applies to the whole group; per-sample
 *               statuses may also be set in out[i].status.
 *   free        releases what init allocated; NULL when there is nothing to
 *               release. Not called when the worker process is killed.
 *
 * Threads and isolation: by default every call happens in a worker process
 * (one sample at a time per process), so a plugin needs no locking and may
 * keep global state. A plugin that crashes, hangs past the timeout or grows
 * past the worker memory limit only fails that sample (status crash,
 * timeout, memory) and quench replaces the worker. With
 * `--reward-isolation inline` calls happen in the calling process and none
 * of these protections exist. In both modes a NaN or infinite value becomes
 * status non_finite: a reward is never silently turned into a number.
 *
 * Memory: every pointer in qn_reward_sample is owned by quench and valid only
 * during the call. Strings are NUL-terminated UTF-8; `*_len` gives their
 * length in bytes so that embedded NULs can be seen.
 *
 * Compatibility rules: a version's struct is never changed after release;
 * new entry points go into a new version (qn_reward_api_v2, exported as
 * <base>_v2), which starts with the same first fields. Enum values are
 * never renumbered.
 */
#ifndef QUENCH_REWARD_H
#define QUENCH_REWARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The newest ABI version this header describes. */
#define QN_REWARD_ABI_VERSION 1

/* Default base name of the exported table; the loader appends "_v<N>". */
#define QN_REWARD_PLUGIN_SYMBOL "qn_reward_plugin"

/* Named scores: a plugin may report up to this many named numbers besides
 * its main value (e.g. "accuracy", "format"); `--reward-key NAME` makes one
 * of them the reward. */
#define QN_REWARD_MAX_NAMED 8
#define QN_REWARD_NAME_CAP 32
#define QN_REWARD_MESSAGE_CAP 160

/* Status of one score. A plugin returns OK or ERROR; quench assigns the
 * others when it sees what happened. X(name, value, json string). */
#define QN_REWARD_STATUS_LIST(X)                                                                   \
    X(QN_REWARD_OK, 0, "ok")                                                                       \
    X(QN_REWARD_ERROR, 1, "error")                                                                 \
    X(QN_REWARD_TIMEOUT, 2, "timeout")                                                             \
    X(QN_REWARD_CRASH, 3, "crash")                                                                 \
    X(QN_REWARD_NON_FINITE, 4, "non_finite")                                                       \
    X(QN_REWARD_MEMORY, 5, "memory")                                                               \
    X(QN_REWARD_MISSING_KEY, 6, "missing_key")                                                     \
    X(QN_REWARD_HTTP_ERROR, 7, "http_error")                                                       \
    X(QN_REWARD_NETWORK_ERROR, 8, "network_error")                                                 \
    X(QN_REWARD_BAD_RESPONSE, 9, "bad_response")

typedef enum qn_reward_status {
#define QN_REWARD_STATUS_ENUM_(name, value, str) name = value,
    QN_REWARD_STATUS_LIST(QN_REWARD_STATUS_ENUM_)
#undef QN_REWARD_STATUS_ENUM_
        QN_REWARD_STATUS_COUNT
} qn_reward_status;

/* One sample as the plugin sees it. */
typedef struct qn_reward_sample {
    const char *prompt; /* prompt text after the chat template */
    size_t prompt_len;
    const int32_t *prompt_ids; /* may be NULL with n_prompt_ids == 0 */
    size_t n_prompt_ids;
    const char *response; /* generated text */
    size_t response_len;
    const int32_t *response_ids; /* may be NULL with n_response_ids == 0 */
    size_t n_response_ids;
    const char *label;         /* dataset label ("" when none) */
    const char *metadata_json; /* JSON object text ("{}" when none) */
    const char *finish_reason; /* "stop", "length", "abort" or "" */
    uint32_t group_index;      /* which prompt group (0-based, per batch) */
    uint32_t sample_index;     /* index inside the group */
} qn_reward_sample;

/* One score. Fixed size and pointer-free so it can cross process borders. */
typedef struct qn_reward_score {
    double value;     /* the reward */
    int32_t status;   /* qn_reward_status */
    uint32_t n_named; /* entries used below */
    char names[QN_REWARD_MAX_NAMED][QN_REWARD_NAME_CAP];
    double named[QN_REWARD_MAX_NAMED];
    char message[QN_REWARD_MESSAGE_CAP]; /* why it failed; "" if ok */
} qn_reward_score;

typedef struct qn_reward_api_v1 {
    uint32_t abi_version; /* must be 1 */
    uint32_t struct_size; /* sizeof(qn_reward_api_v1) */
    const char *name;     /* shown in logs; may be NULL */
    int (*init)(const char *config, void **state, char *err, size_t err_cap);
    int (*score)(void *state, const qn_reward_sample *sample, qn_reward_score *out);
    int (*score_group)(void *state, const qn_reward_sample *samples, size_t n,
                       qn_reward_score *out);
    void (*free)(void *state);
} qn_reward_api_v1;

/* Adds a named number to a score; returns 0, or -1 when the table is full.
 * Names longer than QN_REWARD_NAME_CAP-1 bytes are cut. Header-only so that
 * plugins need not link anything from quench. */
static inline int qn_reward_score_set_named(qn_reward_score *s, const char *name, double v) {
    if (s->n_named >= QN_REWARD_MAX_NAMED) return -1;
    size_t i = 0;
    for (; name[i] && i + 1 < QN_REWARD_NAME_CAP; i++)
        s->names[s->n_named][i] = name[i];
    s->names[s->n_named][i] = '\0';
    s->named[s->n_named++] = v;
    return 0;
}

#ifdef __cplusplus
}
#endif
#endif /* QUENCH_REWARD_H */
