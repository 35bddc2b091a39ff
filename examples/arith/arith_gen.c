/* arith_gen.c — quench-arith-gen: the synthetic data of examples/arith, the
 * tiny GRPO job on zero-padded addition ("07+42=" -> "049").
 *
 * From one seed it writes three files into --out-dir:
 *   train.jsonl  RL prompts for `quench buffer` / `quench generate`
 *   eval.jsonl   held-out prompts, disjoint from every problem in the other two
 *   sft.jsonl    the SFT warm-start batch in `quench train-step`'s format
 * Prompt lines are {"prompt": P, "text": P, "label": L, "prompt_ids": [...]}:
 * the buffer and `quench eval` read "prompt" (--input-key), `quench generate`
 * reads "text", and proto_grpo.sh takes the prompt's token ids from
 * "prompt_ids" to build train-step batches; each reader ignores the rest.
 * The label is the sum written with digits+1 digits, which is also exactly
 * what the SFT responses teach; the math reward compares numbers, so "49"
 * would score as well, while exact string match needs "049".
 * SFT lines are {"tokens": prompt + answer + EOS, "response_start": k,
 * "group": i, "reward": 0}, tokenized with the task tokenizer (--tokenizer).
 *
 * Every (a, b) pair of the problem space is enumerated and shuffled once, so
 * the split is exact: the first --n-eval pairs are held out, training
 * prompts and SFT samples are drawn from the rest. That caps --digits at 3
 * (10^6 pairs). Left out: other operations, variable-width operands, chat
 * templates (the prompts are plain text, no special tokens).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tokenizer/tokenizer.h"
#include "quench/status.h"

typedef struct gen_opts {
    const char *tokenizer;
    const char *out_dir;
    uint64_t seed;
    int digits;
    long n_train, n_eval, n_sft;
    double sft_noise; /* chance that an SFT answer forgets every carry */
} gen_opts;

typedef struct pair {
    uint32_t a, b;
} pair;

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (n > 0). */
static uint64_t uniform_below(uint64_t *s, uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = splitmix64(s);
    while (x >= lim);
    return x % n;
}

/* The sum a sloppy teacher writes when it forgets to carry: each digit is
 * (a_i + b_i) mod 10 and the leading digit is 0. */
static uint32_t sum_without_carries(uint32_t a, uint32_t b) {
    uint32_t s = 0, m = 1;
    for (; a || b; a /= 10, b /= 10, m *= 10)
        s += (a % 10 + b % 10) % 10 * m;
    return s;
}

static void format_problem(const gen_opts *o, pair p, uint32_t sum, char *prompt, size_t pn,
                           char *label, size_t ln) {
    snprintf(prompt, pn, "%0*u+%0*u=", o->digits, p.a, o->digits, p.b);
    snprintf(label, ln, "%0*u", o->digits + 1, sum);
}

static qn_status open_out(const gen_opts *o, const char *name, FILE **f) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", o->out_dir, name);
    *f = fopen(path, "w");
    if (!*f) return qn_fail(QN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return QN_OK;
}

static void put_ids(FILE *f, const qn_token_ids *ids) {
    fputc('[', f);
    for (size_t j = 0; j < ids->n; j++)
        fprintf(f, "%s%" PRId32, j ? ", " : "", ids->ids[j]);
    fputc(']', f);
}

static qn_status write_prompts(const gen_opts *o, const qn_tokenizer *tok, const char *name,
                               const pair *v, long n) {
    FILE *f;
    QN_CHECK(open_out(o, name, &f));
    qn_status st = QN_OK;
    qn_token_ids ids = {0};
    char prompt[32], label[16];
    for (long i = 0; i < n && st == QN_OK; i++) {
        format_problem(o, v[i], v[i].a + v[i].b, prompt, sizeof prompt, label, sizeof label);
        ids.n = 0;
        st = qn_tokenizer_encode(tok, prompt, strlen(prompt), NULL, &ids);
        if (st != QN_OK) break;
        fprintf(f, "{\"prompt\": \"%s\", \"text\": \"%s\", \"label\": \"%s\", \"prompt_ids\": ",
                prompt, prompt, label);
        put_ids(f, &ids);
        fputs("}\n", f);
    }
    qn_token_ids_free(&ids);
    if (fclose(f) != 0 && st == QN_OK)
        st = qn_fail(QN_ERR_IO, "%s/%s: write failed", o->out_dir, name);
    return st;
}

static qn_status write_sft(const gen_opts *o, const qn_tokenizer *tok, const pair *pool,
                           long n_pool, uint64_t *rng) {
    int32_t eos = qn_tokenizer_special_ids(tok)->eos;
    if (eos < 0) return qn_fail(QN_ERR_FORMAT, "%s: the tokenizer has no eos_token", o->tokenizer);
    FILE *f;
    QN_CHECK(open_out(o, "sft.jsonl", &f));
    qn_status st = QN_OK;
    qn_token_ids ids = {0};
    char prompt[32], label[16];
    for (long i = 0; i < o->n_sft && st == QN_OK; i++) {
        pair p = pool[uniform_below(rng, (uint64_t)n_pool)];
        /* 53 random bits: a uniform double in [0, 1) */
        double u = (double)(splitmix64(rng) >> 11) / 9007199254740992.0;
        uint32_t sum = u < o->sft_noise ? sum_without_carries(p.a, p.b) : p.a + p.b;
        format_problem(o, p, sum, prompt, sizeof prompt, label, sizeof label);
        ids.n = 0;
        st = qn_tokenizer_encode(tok, prompt, strlen(prompt), NULL, &ids);
        size_t k = ids.n;
        if (st == QN_OK) st = qn_tokenizer_encode(tok, label, strlen(label), NULL, &ids);
        if (st == QN_OK) st = qn_token_ids_push(&ids, eos);
        if (st != QN_OK) break;
        fputs("{\"tokens\": ", f);
        put_ids(f, &ids);
        fprintf(f, ", \"response_start\": %zu, \"group\": %ld, \"reward\": 0}\n", k, i);
    }
    qn_token_ids_free(&ids);
    if (fclose(f) != 0 && st == QN_OK)
        st = qn_fail(QN_ERR_IO, "%s/sft.jsonl: write failed", o->out_dir);
    return st;
}

static qn_status generate(const gen_opts *o) {
    if (o->digits < 1 || o->digits > 3)
        return qn_fail(QN_ERR_INVALID, "--digits %d: must be 1, 2 or 3", o->digits);
    long side = 1;
    for (int i = 0; i < o->digits; i++)
        side *= 10;
    long n_all = side * side;
    if (!(o->sft_noise >= 0 && o->sft_noise <= 1))
        return qn_fail(QN_ERR_INVALID, "--sft-noise %g: must be in [0, 1]", o->sft_noise);
    if (o->n_eval < 0 || o->n_train < 0 || o->n_sft < 0 || o->n_eval >= n_all)
        return qn_fail(QN_ERR_INVALID, "--n-eval %ld: must leave training problems out of %ld",
                       o->n_eval, n_all);
    pair *all = malloc((size_t)n_all * sizeof *all);
    if (!all) return qn_fail(QN_ERR_NOMEM, "%ld problems", n_all);
    for (long i = 0; i < n_all; i++)
        all[i] = (pair){(uint32_t)(i / side), (uint32_t)(i % side)};
    uint64_t rng = o->seed * 0x2545f4914f6cdd1dull + 1;
    for (long i = n_all - 1; i > 0; i--) {
        long j = (long)uniform_below(&rng, (uint64_t)i + 1);
        pair t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    const pair *eval = all, *pool = all + o->n_eval;
    long n_pool = n_all - o->n_eval;
    /* Training prompts walk the shuffled pool (distinct while n_train <=
     * n_pool) and wrap around after that. */
    pair *train = malloc((size_t)(o->n_train ? o->n_train : 1) * sizeof *train);
    qn_tokenizer *tok = NULL;
    qn_status st = train ? QN_OK : qn_fail(QN_ERR_NOMEM, "%ld training prompts", o->n_train);
    for (long i = 0; st == QN_OK && i < o->n_train; i++)
        train[i] = pool[i % n_pool];
    if (st == QN_OK) st = qn_tokenizer_load(o->tokenizer, &tok);
    if (st == QN_OK) st = write_prompts(o, tok, "eval.jsonl", eval, o->n_eval);
    if (st == QN_OK) st = write_prompts(o, tok, "train.jsonl", train, o->n_train);
    if (st == QN_OK) st = write_sft(o, tok, pool, n_pool, &rng);
    qn_tokenizer_free(tok);
    free(train);
    free(all);
    return st;
}

static void usage(FILE *f) {
    fputs("usage: quench-arith-gen --tokenizer DIR --out-dir DIR [--seed N] [--digits D]\n"
          "                        [--n-train N] [--n-eval N] [--n-sft N] [--sft-noise P]\n"
          "Writes train.jsonl, eval.jsonl (held out) and sft.jsonl for examples/arith:\n"
          "D-digit zero-padded additions \"07+42=\" with the (D+1)-digit sum \"049\".\n"
          "SFT answers forget every carry with probability P (a sloppy teacher).\n"
          "Defaults (the recipe of examples/arith/README.md): --seed 1 --digits 2\n"
          "--n-train 4000 --n-eval 500 --n-sft 40000 --sft-noise 0.6.\n",
          f);
}

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    gen_opts o = {
        .seed = 1, .digits = 2, .n_train = 4000, .n_eval = 500, .n_sft = 40000, .sft_noise = 0.6};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "quench-arith-gen: %s: missing value\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long n = 0;
        bool ok = true;
        if (!strcmp(a, "--tokenizer"))
            o.tokenizer = v;
        else if (!strcmp(a, "--out-dir"))
            o.out_dir = v;
        else if (!strcmp(a, "--seed")) {
            ok = parse_long(v, &n) && n >= 0;
            o.seed = (uint64_t)n;
        } else if (!strcmp(a, "--digits")) {
            ok = parse_long(v, &n) && n >= 1 && n <= 3;
            o.digits = (int)n;
        } else if (!strcmp(a, "--n-train"))
            ok = parse_long(v, &o.n_train);
        else if (!strcmp(a, "--n-eval"))
            ok = parse_long(v, &o.n_eval);
        else if (!strcmp(a, "--n-sft"))
            ok = parse_long(v, &o.n_sft);
        else if (!strcmp(a, "--sft-noise")) {
            char *end;
            o.sft_noise = strtod(v, &end);
            ok = end != v && !*end;
        } else
            ok = false;
        if (!ok) {
            fprintf(stderr, "quench-arith-gen: bad flag or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!o.tokenizer || !o.out_dir) {
        usage(stderr);
        return 2;
    }
    if (generate(&o) != QN_OK) {
        fprintf(stderr, "quench-arith-gen: %s\n", qn_last_error());
        return 1;
    }
    return 0;
}
