/* cmd_tokenize.c — `quench tokenize`: text -> ids, ids -> text, chat
 * messages -> prompt (text or ids), a tokenizer.json export, and an encode
 * speed measurement. Input is stdin or --input, taken byte for byte.
 * Leaves out: batch (JSONL) modes; the buffer tokenizes its own data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "core/flags.h"
#include "core/tokenizer/tokenizer.h"

typedef struct tokenize_cfg {
    char *tokenizer;
    char *input;
    bool decode;
    bool chat;
    bool render;
    int chat_template;
    bool add_generation_prompt;
    int enable_thinking;
    bool add_special;
    bool skip_special;
    char *export_json;
    int64_t bench;
} tokenize_cfg;

enum { TPL_AUTO, TPL_GLM45, TPL_CHATML, TPL_QWEN25, TPL_QWEN3, TPL_RAW };
enum { THINK_UNSET, THINK_TRUE, THINK_FALSE };

static const qn_flag k_flags[] = {
    QN_F_STRING(tokenize_cfg, tokenizer, "tokenizer", NULL,
                "tokenizer folder (tokenizer.json, vocab.json + merges.txt, or tokenizer.model)",
                .attrs = QN_FLAG_REQUIRED, .metavar = "DIR"),
    QN_F_STRING(tokenize_cfg, input, "input", NULL, "read this file instead of stdin",
                .metavar = "FILE"),
    QN_F_BOOL(tokenize_cfg, decode, "decode", "false",
              "read a JSON array of ids and print the text they decode to"),
    QN_F_BOOL(tokenize_cfg, chat, "chat", "false",
              "read a JSON list of messages (or {\"messages\", \"tools\"}) and print the "
              "rendered prompt's ids"),
    QN_F_BOOL(tokenize_cfg, render, "render", "false",
              "with --chat: print the rendered prompt text instead of ids"),
    QN_F_CHOICE(tokenize_cfg, chat_template, "chat-template", "auto",
                "auto|glm45|chatml|qwen2.5|qwen3|raw",
                "chat template; auto recognises the tokenizer's own"),
    QN_F_BOOL(tokenize_cfg, add_generation_prompt, "add-generation-prompt", "true",
              "with --chat: end with the assistant turn's opening"),
    QN_F_CHOICE(tokenize_cfg, enable_thinking, "enable-thinking", "unset", "unset|true|false",
                "with --chat: the template's enable_thinking variable"),
    QN_F_BOOL(tokenize_cfg, add_special, "add-special", "false",
              "add the tokenizer's template tokens (GLM: [gMASK]<sop>) around the text"),
    QN_F_BOOL(tokenize_cfg, skip_special, "skip-special", "false",
              "with --decode: leave special tokens out of the text"),
    QN_F_STRING(tokenize_cfg, export_json, "export-json", NULL,
                "write the loaded tokenizer as a Hugging Face tokenizer.json and exit",
                .metavar = "PATH"),
    QN_F_INT(tokenize_cfg, bench, "bench", "0", 0, 1000000,
             "encode the input this many times and print the speed as JSON instead of ids"),
};

static const qn_flag_table k_table = {
    .command = "tokenize",
    .usage = "quench tokenize --tokenizer DIR [--input FILE] [--decode | --chat [--render]]",
    .summary = "Encodes UTF-8 text (stdin or --input, byte for byte, no newline stripped) and "
               "prints the ids as one JSON array, without special tokens added. --decode reads "
               "a JSON array of ids and prints the text. --chat reads a JSON list of messages, "
               "renders it with the chat template and prints the ids (--render: the text).",
    .flags = k_flags,
    .n_flags = QN_FLAGS_COUNT(k_flags),
    .cfg_size = sizeof(tokenize_cfg)};

void qn_help_tokenize(FILE *out) { qn_flags_print_help(&k_table, out); }

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static void print_ids(const qn_token_ids *ids) {
    fputc('[', stdout);
    for (size_t i = 0; i < ids->n; i++) printf(i ? ", %d" : "%d", ids->ids[i]);
    fputs("]\n", stdout);
}

static int do_decode(const qn_tokenizer *tok, const tokenize_cfg *c, const char *in, size_t len) {
    cJSON *arr = cJSON_ParseWithLength(in, len);
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        fprintf(stderr, "quench tokenize: --decode expects a JSON array of token ids\n");
        return QN_EXIT_FAILURE;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int32_t)e->valuedouble) {
            fprintf(stderr, "quench tokenize: --decode: element %zu is not an integer id\n", i);
            free(ids);
            cJSON_Delete(arr);
            return QN_EXIT_FAILURE;
        }
        ids[i++] = (int32_t)e->valuedouble;
    }
    cJSON_Delete(arr);
    char *text;
    size_t tl;
    qn_status s = qn_tokenizer_decode(tok, ids, n, c->skip_special, &text, &tl);
    free(ids);
    if (s != QN_OK) {
        fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
        return QN_EXIT_FAILURE;
    }
    fwrite(text, 1, tl, stdout);
    free(text);
    return QN_EXIT_OK;
}

static int pick_template(const qn_tokenizer *tok, int choice, qn_chat_template *tpl) {
    static const char *names[] = {"auto", "glm45", "chatml", "qwen2.5", "qwen3", "raw"};
    qn_status s = qn_chat_template_for(tok, names[choice], tpl);
    if (s != QN_OK) {
        fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
        return QN_EXIT_FAILURE;
    }
    return QN_EXIT_OK;
}

static int run(const tokenize_cfg *c) {
    qn_tokenizer *tok;
    if (qn_tokenizer_load(c->tokenizer, &tok) != QN_OK) {
        fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
        return QN_EXIT_FAILURE;
    }
    int rc = QN_EXIT_OK;
    char *in = NULL, *prompt = NULL;
    cJSON *doc = NULL;
    qn_token_ids ids = {0};
    if (c->export_json) {
        if (qn_tokenizer_save_json(tok, c->export_json) != QN_OK) {
            fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
        }
        goto done;
    }
    size_t len = 0;
    FILE *f = c->input ? fopen(c->input, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "quench tokenize: %s: cannot open\n", c->input);
        rc = QN_EXIT_FAILURE;
        goto done;
    }
    in = read_all(f, &len);
    if (f != stdin) fclose(f);
    if (!in) {
        fprintf(stderr, "quench tokenize: %s: read failed\n", c->input ? c->input : "stdin");
        rc = QN_EXIT_FAILURE;
        goto done;
    }
    if (c->decode) {
        rc = do_decode(tok, c, in, len);
        goto done;
    }
    const char *text = in;
    size_t text_len = len;
    if (c->chat) {
        doc = cJSON_ParseWithLength(in, len);
        const cJSON *msgs = doc, *tools = NULL;
        if (cJSON_IsObject(doc)) {
            msgs = cJSON_GetObjectItemCaseSensitive(doc, "messages");
            tools = cJSON_GetObjectItemCaseSensitive(doc, "tools");
        }
        if (!cJSON_IsArray(msgs)) {
            fprintf(stderr, "quench tokenize: --chat expects a JSON list of messages or an object "
                            "with \"messages\"\n");
            rc = QN_EXIT_FAILURE;
            goto done;
        }
        qn_chat_template tpl;
        if ((rc = pick_template(tok, c->chat_template, &tpl)) != QN_EXIT_OK) goto done;
        qn_chat_opts o = {.add_generation_prompt = c->add_generation_prompt,
                          .enable_thinking = c->enable_thinking == THINK_UNSET ? -1
                                             : c->enable_thinking == THINK_TRUE ? 1 : 0,
                          .tools = cJSON_IsArray(tools) ? tools : NULL};
        size_t pl;
        if (qn_chat_render(&tpl, msgs, &o, &prompt, &pl) != QN_OK) {
            fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
            rc = QN_EXIT_FAILURE;
            goto done;
        }
        if (c->render) {
            fwrite(prompt, 1, pl, stdout);
            goto done;
        }
        text = prompt;
        text_len = pl;
    }
    qn_encode_opts eo = {.split_special = false, .add_special = c->add_special};
    if (c->bench > 0) {
        /* CPU time beside wall time: on a shared machine the wall figure
         * includes waiting for a core */
        struct timespec t0, t1, c0, c1;
        size_t n_tokens = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
        for (int64_t r = 0; r < c->bench; r++) {
            ids.n = 0;
            if (qn_tokenizer_encode(tok, text, text_len, &eo, &ids) != QN_OK) break;
            n_tokens += ids.n;
        }
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double cpu = (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
        double mb = (double)text_len * (double)c->bench / 1e6;
        printf("{\"bytes\": %zu, \"repeats\": %lld, \"tokens\": %zu, \"seconds\": %.4f, "
               "\"cpu_seconds\": %.4f, \"mb_per_s\": %.2f, \"mb_per_cpu_s\": %.2f, "
               "\"tokens_per_s\": %.0f}\n",
               text_len, (long long)c->bench, n_tokens, sec, cpu, sec > 0 ? mb / sec : 0.0,
               cpu > 0 ? mb / cpu : 0.0, sec > 0 ? (double)n_tokens / sec : 0.0);
        goto done;
    }
    if (qn_tokenizer_encode(tok, text, text_len, &eo, &ids) != QN_OK) {
        fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
        rc = QN_EXIT_FAILURE;
        goto done;
    }
    print_ids(&ids);
done:
    qn_token_ids_free(&ids);
    cJSON_Delete(doc);
    free(prompt);
    free(in);
    qn_tokenizer_free(tok);
    return rc;
}

int qn_cmd_tokenize(int argc, char **argv) {
    tokenize_cfg cfg;
    qn_flags_parsed p;
    if (qn_flags_parse(&k_table, &cfg, argc, argv, &p) != QN_OK) {
        fprintf(stderr, "quench tokenize: %s\n", qn_last_error());
        return QN_EXIT_USAGE;
    }
    int rc;
    if (p.print_config) {
        qn_flags_dump(&k_table, &cfg, &p, stdout);
        rc = QN_EXIT_OK;
    } else if (p.n_args > 0) {
        fprintf(stderr, "quench tokenize: unexpected argument '%s' (use --input FILE)\n", p.args[0]);
        rc = QN_EXIT_USAGE;
    } else if (cfg.decode && cfg.chat) {
        fprintf(stderr, "quench tokenize: --decode and --chat exclude each other\n");
        rc = QN_EXIT_USAGE;
    } else if (cfg.render && !cfg.chat) {
        fprintf(stderr, "quench tokenize: --render needs --chat\n");
        rc = QN_EXIT_USAGE;
    } else {
        rc = run(&cfg);
    }
    qn_flags_parsed_free(&p);
    qn_flags_free(&k_table, &cfg);
    return rc;
}
