/* chat_template.c — the chat templates of GLM-4.5 and ChatML (Qwen2.5,
 * Qwen3) written out in C, producing byte for byte what Hugging Face's
 * apply_chat_template renders from the models' Jinja templates (with
 * trim_blocks and lstrip_blocks, as transformers sets them).
 *
 * Covered: system/user/assistant/tool roles, content as a string or a list
 * of text parts, GLM-4.5's <think> handling (reasoning_content, reasoning
 * inside <think>...</think> in content, enable_thinking and /nothink),
 * tool schemas, assistant tool_calls and tool responses; Qwen2.5's default
 * system prompt; Qwen3's <think> rules. Leaves out: other templates (a Jinja
 * interpreter is deliberately not written), images/video parts, tojson of
 * floats written with a trailing ".0" in the input (printed as integers).
 * docs/tokenizer.md lists the details. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "core/tokenizer/tokenizer.h"

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* ---- Python-like string helpers --------------------------------------- */

/* Python str.isspace for the code point at s (width in *w). */
static bool py_space_at(const char *s, size_t n, size_t *w) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (k <= 0) {
        *w = 1;
        return false;
    }
    *w = (size_t)k;
    if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0x2028 ||
        cp == 0x2029)
        return true;
    return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

/* Python str.strip() on [s, s+n): returns the trimmed span. */
static void py_strip(const char **s, size_t *n) {
    const char *p = *s;
    size_t len = *n, w;
    while (len && py_space_at(p, len, &w)) {
        p += w;
        len -= w;
    }
    /* scan from the left to find the last non-space character's end */
    size_t end = 0, i = 0;
    while (i < len) {
        bool sp = py_space_at(p + i, len - i, &w);
        i += w;
        if (!sp) end = i;
    }
    *s = p;
    *n = end;
}

static void strip_chars(const char **s, size_t *n, char c, bool left, bool right) {
    while (left && *n && (*s)[0] == c) {
        (*s)++;
        (*n)--;
    }
    while (right && *n && (*s)[*n - 1] == c) (*n)--;
}

static const char *mem_find(const char *h, size_t hn, const char *nd) {
    size_t nn = strlen(nd);
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++) {
        if (memcmp(h + i, nd, nn) == 0) return h + i;
    }
    return NULL;
}

static const char *mem_rfind(const char *h, size_t hn, const char *nd) {
    size_t nn = strlen(nd);
    if (nn > hn) return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;) {
        if (memcmp(h + i, nd, nn) == 0) return h + i;
    }
    return NULL;
}

/* ---- tojson as transformers defines it: json.dumps(ensure_ascii=False) -- */

static void json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_str(b, esc);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

static void json_number(sbuf *b, double v) {
    char tmp[64];
    if (!isfinite(v)) {
        sb_str(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(tmp, sizeof tmp, "%.0f", v);
        sb_str(b, tmp);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) { /* shortest text that reads back the same */
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    sb_str(b, tmp);
}

static void json_value(sbuf *b, const cJSON *v) {
    if (cJSON_IsString(v)) {
        json_string(b, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        json_number(b, v->valuedouble);
    } else if (cJSON_IsBool(v)) {
        sb_str(b, cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsArray(v)) {
        sb_put(b, "[", 1);
        const cJSON *e;
        bool first = true;
        cJSON_ArrayForEach(e, v) {
            if (!first) sb_put(b, ", ", 2);
            first = false;
            json_value(b, e);
        }
        sb_put(b, "]", 1);
    } else if (cJSON_IsObject(v)) {
        sb_put(b, "{", 1);
        const cJSON *e;
        bool first = true;
        cJSON_ArrayForEach(e, v) {
            if (!first) sb_put(b, ", ", 2);
            first = false;
            json_string(b, e->string);
            sb_put(b, ": ", 2);
            json_value(b, e);
        }
        sb_put(b, "}", 1);
    } else {
        sb_str(b, "null");
    }
}

/* ---- message access --------------------------------------------------- */

static const char *role_of(const cJSON *m) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
    return cJSON_IsString(r) ? r->valuestring : "";
}

/* GLM's visible_text macro (and plain content for ChatML): a string as is,
 * a list's text parts joined, missing as "", null as Jinja prints it. */
static qn_status visible_text(const cJSON *m, size_t idx, sbuf *out) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!c) return QN_OK;
    if (cJSON_IsString(c)) {
        sb_str(out, c->valuestring);
    } else if (cJSON_IsArray(c)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, c) {
            if (cJSON_IsString(e)) {
                sb_str(out, e->valuestring);
            } else if (cJSON_IsObject(e)) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(e, "type");
                const cJSON *tx = cJSON_GetObjectItemCaseSensitive(e, "text");
                if (cJSON_IsString(ty) && strcmp(ty->valuestring, "text") == 0 && cJSON_IsString(tx))
                    sb_str(out, tx->valuestring);
            }
        }
    } else if (cJSON_IsNull(c)) {
        sb_str(out, "None");
    } else {
        return qn_fail(QN_ERR_FORMAT, "messages[%zu]: content must be a string or a list of "
                       "parts", idx);
    }
    return QN_OK;
}

/* Splits reasoning out of content the way both templates do:
 * reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
 * content   = content.split('</think>')[-1].lstrip('\n') */
static void split_think(const char *c, size_t n, const char **rs, size_t *rn, const char **cs,
                        size_t *cn) {
    const char *close = mem_find(c, n, "</think>");
    const char *r = c;
    size_t rl = (size_t)(close - c);
    strip_chars(&r, &rl, '\n', false, true);
    const char *open = mem_rfind(r, rl, "<think>");
    if (open) {
        rl -= (size_t)(open + 7 - r);
        r = open + 7;
    }
    strip_chars(&r, &rl, '\n', true, false);
    const char *lc = mem_rfind(c, n, "</think>") + 8;
    size_t ll = n - (size_t)(lc - c);
    strip_chars(&lc, &ll, '\n', true, false);
    *rs = r;
    *rn = rl;
    *cs = lc;
    *cn = ll;
}

static qn_status tool_args(const cJSON *tc, size_t idx, cJSON **owned, const cJSON **args) {
    *owned = NULL;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(tc, "arguments");
    if (cJSON_IsString(a)) { /* OpenAI style: arguments as JSON text */
        *owned = cJSON_Parse(a->valuestring);
        if (!*owned) return qn_fail(QN_ERR_FORMAT, "messages[%zu]: tool call arguments are not "
                                    "JSON", idx);
        a = *owned;
    }
    *args = a;
    return QN_OK;
}

static const cJSON *tool_function(const cJSON *tc) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(tc, "function");
    return cJSON_IsObject(f) ? f : tc;
}

static const char *tool_name(const cJSON *tc) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(tc, "name");
    return cJSON_IsString(n) ? n->valuestring : "";
}

/* ---- GLM-4.5 ----------------------------------------------------------- */

static qn_status render_glm45(const cJSON *messages, const qn_chat_opts *o, sbuf *b) {
    sb_str(b, "[gMASK]<sop>");
    if (o->tools && cJSON_GetArraySize(o->tools) > 0) {
        sb_str(b, "<|system|>\n# Tools\n\nYou may call one or more functions to assist with the "
                  "user query.\n\nYou are provided with function signatures within "
                  "<tools></tools> XML tags:\n<tools>\n");
        const cJSON *t;
        cJSON_ArrayForEach(t, o->tools) {
            json_value(b, t);
            sb_str(b, "\n");
        }
        sb_str(b, "</tools>\n\nFor each function call, output the function name and arguments "
                  "within the following XML format:\n<tool_call>{function-name}\n"
                  "<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
                  "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n"
                  "</tool_call>");
    }
    int n = cJSON_GetArraySize(messages);
    int last_user = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(role_of(cJSON_GetArrayItem(messages, i)), "user") == 0) last_user = i;
    }
    qn_status st = QN_OK;
    sbuf vt = {0};
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(messages, i);
        const char *role = role_of(m);
        vt.n = 0;
        if (vt.p) vt.p[0] = 0;
        if (strcmp(role, "user") == 0) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            sb_str(b, "<|user|>\n");
            sb_put(b, vt.p ? vt.p : "", vt.n);
            bool ends = vt.n >= 8 && memcmp(vt.p + vt.n - 8, "/nothink", 8) == 0;
            if (o->enable_thinking == 0 && !ends) sb_str(b, "/nothink");
        } else if (strcmp(role, "assistant") == 0) {
            sb_str(b, "<|assistant|>");
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            const char *c = vt.p ? vt.p : "", *r = "";
            size_t cn = vt.n, rn = 0;
            const cJSON *rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
            if (cJSON_IsString(rc)) {
                r = rc->valuestring;
                rn = strlen(r);
            } else if (mem_find(c, cn, "</think>")) {
                split_think(c, cn, &r, &rn, &c, &cn);
            }
            if (i > last_user && rn > 0) {
                py_strip(&r, &rn);
                sb_str(b, "\n<think>");
                sb_put(b, r, rn);
                sb_str(b, "</think>");
            } else {
                sb_str(b, "\n<think></think>");
            }
            py_strip(&c, &cn);
            if (cn) {
                sb_str(b, "\n");
                sb_put(b, c, cn);
            }
            const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
            const cJSON *tc;
            if (cJSON_IsArray(tcs)) {
                cJSON_ArrayForEach(tc, tcs) {
                    const cJSON *f = tool_function(tc);
                    sb_str(b, "\n<tool_call>");
                    sb_str(b, tool_name(f));
                    sb_str(b, "\n");
                    cJSON *owned;
                    const cJSON *args;
                    QN_CHECK_GOTO(tool_args(f, (size_t)i, &owned, &args), st, done);
                    const cJSON *kv;
                    const cJSON *obj = cJSON_IsObject(args) ? args : NULL;
                    cJSON_ArrayForEach(kv, obj) {
                        sb_str(b, "<arg_key>");
                        sb_str(b, kv->string);
                        sb_str(b, "</arg_key>\n<arg_value>");
                        if (cJSON_IsString(kv)) sb_str(b, kv->valuestring);
                        else json_value(b, kv);
                        sb_str(b, "</arg_value>\n");
                    }
                    cJSON_Delete(owned);
                    sb_str(b, "</tool_call>");
                }
            }
        } else if (strcmp(role, "tool") == 0) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
            if (cJSON_IsString(c)) {
                if (i == 0 || strcmp(role_of(cJSON_GetArrayItem(messages, i - 1)), "tool") != 0)
                    sb_str(b, "<|observation|>");
                sb_str(b, "\n<tool_response>\n");
                sb_str(b, c->valuestring);
                sb_str(b, "\n</tool_response>");
            } else if (cJSON_IsArray(c)) {
                sb_str(b, "<|observation|>");
                const cJSON *tr;
                cJSON_ArrayForEach(tr, c) {
                    const cJSON *outp = cJSON_GetObjectItemCaseSensitive(tr, "output");
                    const cJSON *v = outp ? outp : tr;
                    if (!cJSON_IsString(v)) {
                        st = qn_fail(QN_ERR_UNSUPPORTED, "messages[%zu]: tool response parts "
                                     "must be strings or {\"output\": string}", (size_t)i);
                        goto done;
                    }
                    sb_str(b, "\n<tool_response>\n");
                    sb_str(b, v->valuestring);
                    sb_str(b, "\n</tool_response>");
                }
            } else {
                st = qn_fail(QN_ERR_FORMAT, "messages[%zu]: tool content must be a string or a "
                             "list", (size_t)i);
                goto done;
            }
        } else if (strcmp(role, "system") == 0) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            sb_str(b, "<|system|>\n");
            sb_put(b, vt.p ? vt.p : "", vt.n);
        }
    }
    if (o->add_generation_prompt) {
        sb_str(b, "<|assistant|>");
        if (o->enable_thinking == 0) sb_str(b, "\n<think></think>");
    }
done:
    free(vt.p);
    return st;
}

/* ---- ChatML (Qwen2.5 / Qwen3) ----------------------------------------- */

static void chatml_tools_header(sbuf *b, const qn_chat_opts *o) {
    sb_str(b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
              "You are provided with function signatures within <tools></tools> XML tags:\n"
              "<tools>");
    const cJSON *t;
    cJSON_ArrayForEach(t, o->tools) {
        sb_str(b, "\n");
        json_value(b, t);
    }
    sb_str(b, "\n</tools>\n\nFor each function call, return a json object with function name and "
              "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
              "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n");
}

static qn_status chatml_tool_calls(sbuf *b, const cJSON *m, size_t idx, bool qwen3, bool has_content) {
    const cJSON *tcs = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    const cJSON *tc;
    bool first = true;
    const cJSON *list = cJSON_IsArray(tcs) ? tcs : NULL;
    cJSON_ArrayForEach(tc, list) {
        const cJSON *f = tool_function(tc);
        if (!qwen3 || !first || has_content) sb_str(b, "\n");
        first = false;
        sb_str(b, "<tool_call>\n{\"name\": \"");
        sb_str(b, tool_name(f));
        sb_str(b, "\", \"arguments\": ");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        if (qwen3 && cJSON_IsString(a)) {
            sb_str(b, a->valuestring);
        } else {
            cJSON *owned;
            const cJSON *args;
            QN_CHECK(tool_args(f, idx, &owned, &args));
            json_value(b, args);
            cJSON_Delete(owned);
        }
        sb_str(b, "}\n</tool_call>");
    }
    return QN_OK;
}

static bool has_tool_calls(const cJSON *m) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    return cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0;
}

static qn_status render_chatml(const qn_chat_template *tpl, const cJSON *messages,
                               const qn_chat_opts *o, sbuf *b) {
    int n = cJSON_GetArraySize(messages);
    const cJSON *m0 = cJSON_GetArrayItem(messages, 0);
    bool first_system = m0 && strcmp(role_of(m0), "system") == 0;
    bool tools = o->tools && cJSON_GetArraySize(o->tools) > 0;
    qn_status st = QN_OK;
    sbuf vt = {0};
    if (tools) {
        sb_str(b, "<|im_start|>system\n");
        if (first_system) {
            QN_CHECK_GOTO(visible_text(m0, 0, &vt), st, done);
            sb_put(b, vt.p ? vt.p : "", vt.n);
            sb_str(b, "\n\n");
        } else if (tpl->default_system) {
            sb_str(b, tpl->default_system);
            sb_str(b, "\n\n");
        }
        chatml_tools_header(b, o);
    } else if (first_system) {
        QN_CHECK_GOTO(visible_text(m0, 0, &vt), st, done);
        sb_str(b, "<|im_start|>system\n");
        sb_put(b, vt.p ? vt.p : "", vt.n);
        sb_str(b, "<|im_end|>\n");
    } else if (tpl->default_system) {
        sb_str(b, "<|im_start|>system\n");
        sb_str(b, tpl->default_system);
        sb_str(b, "<|im_end|>\n");
    }
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        const cJSON *m = cJSON_GetArrayItem(messages, i);
        if (strcmp(role_of(m), "user") != 0) continue;
        vt.n = 0;
        QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
        const char *c = vt.p ? vt.p : "";
        bool tr = vt.n >= 15 && memcmp(c, "<tool_response>", 15) == 0 && vt.n >= 16 &&
                  memcmp(c + vt.n - 16, "</tool_response>", 16) == 0;
        if (!tr) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(messages, i);
        const char *role = role_of(m);
        vt.n = 0;
        if (vt.p) vt.p[0] = 0;
        bool is_user = strcmp(role, "user") == 0;
        bool is_sys = strcmp(role, "system") == 0;
        bool is_asst = strcmp(role, "assistant") == 0;
        if (is_user || (is_sys && i > 0) || (is_asst && !tpl->qwen3_think && !has_tool_calls(m))) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            sb_str(b, "<|im_start|>");
            sb_str(b, role);
            sb_str(b, "\n");
            sb_put(b, vt.p ? vt.p : "", vt.n);
            sb_str(b, "<|im_end|>\n");
        } else if (is_asst && !tpl->qwen3_think) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            sb_str(b, "<|im_start|>assistant");
            if (vt.n) {
                sb_str(b, "\n");
                sb_put(b, vt.p, vt.n);
            }
            QN_CHECK_GOTO(chatml_tool_calls(b, m, (size_t)i, false, vt.n > 0), st, done);
            sb_str(b, "<|im_end|>\n");
        } else if (is_asst) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            const char *c = vt.p ? vt.p : "", *r = "";
            size_t cn = vt.n, rn = 0;
            const cJSON *rc = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
            if (rc && !cJSON_IsNull(rc)) {
                if (!cJSON_IsString(rc)) {
                    st = qn_fail(QN_ERR_FORMAT, "messages[%d]: reasoning_content must be a string", i);
                    goto done;
                }
                r = rc->valuestring;
                rn = strlen(r);
            } else if (mem_find(c, cn, "</think>")) {
                split_think(c, cn, &r, &rn, &c, &cn);
            }
            sb_str(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || rn > 0)) {
                strip_chars(&r, &rn, '\n', true, true);
                strip_chars(&c, &cn, '\n', true, false);
                sb_str(b, "<think>\n");
                sb_put(b, r, rn);
                sb_str(b, "\n</think>\n\n");
            }
            sb_put(b, c, cn);
            QN_CHECK_GOTO(chatml_tool_calls(b, m, (size_t)i, true, cn > 0), st, done);
            sb_str(b, "<|im_end|>\n");
        } else if (strcmp(role, "tool") == 0) {
            QN_CHECK_GOTO(visible_text(m, (size_t)i, &vt), st, done);
            if (i == 0 || strcmp(role_of(cJSON_GetArrayItem(messages, i - 1)), "tool") != 0)
                sb_str(b, "<|im_start|>user");
            sb_str(b, "\n<tool_response>\n");
            sb_put(b, vt.p ? vt.p : "", vt.n);
            sb_str(b, "\n</tool_response>");
            if (i == n - 1 || strcmp(role_of(cJSON_GetArrayItem(messages, i + 1)), "tool") != 0)
                sb_str(b, "<|im_end|>\n");
        }
    }
    if (o->add_generation_prompt) {
        sb_str(b, "<|im_start|>assistant\n");
        if (tpl->qwen3_think && o->enable_thinking == 0) sb_str(b, "<think>\n\n</think>\n\n");
    }
done:
    free(vt.p);
    return st;
}

static qn_status render_raw(const cJSON *messages, sbuf *b) {
    const cJSON *m;
    size_t i = 0;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (c && !cJSON_IsNull(c)) QN_CHECK(visible_text(m, i, b));
        i++;
    }
    return QN_OK;
}

qn_status qn_chat_render(const qn_chat_template *tpl, const cJSON *messages,
                         const qn_chat_opts *opts, char **text, size_t *len) {
    qn_chat_opts o = opts ? *opts : (qn_chat_opts){.add_generation_prompt = false, .enable_thinking = -1};
    *text = NULL;
    if (len) *len = 0;
    if (!cJSON_IsArray(messages)) return qn_fail(QN_ERR_FORMAT, "chat: messages must be a JSON array");
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(r))
            return qn_fail(QN_ERR_FORMAT, "chat: messages[%zu] needs a string \"role\"", i);
        i++;
    }
    if (o.tools && !cJSON_IsArray(o.tools)) return qn_fail(QN_ERR_FORMAT, "chat: tools must be a JSON array");
    sbuf b = {0};
    sb_put(&b, "", 0);
    qn_status st;
    switch (tpl->kind) {
    case QN_CHAT_GLM45: st = render_glm45(messages, &o, &b); break;
    case QN_CHAT_CHATML: st = render_chatml(tpl, messages, &o, &b); break;
    case QN_CHAT_RAW: st = render_raw(messages, &b); break;
    default: st = qn_fail(QN_ERR_INVALID, "chat: unknown template kind %d", (int)tpl->kind);
    }
    if (st == QN_OK && b.oom) st = qn_fail(QN_ERR_NOMEM, "chat: out of memory");
    if (st != QN_OK) {
        free(b.p);
        return st;
    }
    *text = b.p;
    if (len) *len = b.n;
    return QN_OK;
}

static const char k_qwen25_system[] = "You are Qwen, created by Alibaba Cloud. You are a helpful "
                                      "assistant.";

qn_status qn_chat_template_parse(const char *name, qn_chat_template *out) {
    *out = (qn_chat_template){0};
    if (!strcmp(name, "glm45") || !strcmp(name, "glm4.5") || !strcmp(name, "glm-4.5")) {
        out->kind = QN_CHAT_GLM45;
    } else if (!strcmp(name, "chatml")) {
        out->kind = QN_CHAT_CHATML;
    } else if (!strcmp(name, "qwen2.5") || !strcmp(name, "qwen25")) {
        out->kind = QN_CHAT_CHATML;
        out->default_system = k_qwen25_system;
    } else if (!strcmp(name, "qwen3")) {
        out->kind = QN_CHAT_CHATML;
        out->qwen3_think = true;
    } else if (!strcmp(name, "raw")) {
        out->kind = QN_CHAT_RAW;
    } else {
        return qn_fail(QN_ERR_INVALID, "chat template '%s': expected glm45, chatml, qwen2.5, "
                       "qwen3 or raw", name);
    }
    return QN_OK;
}

qn_status qn_chat_template_detect(const char *jinja, qn_chat_template *out) {
    *out = (qn_chat_template){0};
    if (!jinja) return qn_fail(QN_ERR_NOT_FOUND, "chat template: the tokenizer has none");
    if (strstr(jinja, "[gMASK]<sop>") && strstr(jinja, "<|assistant|>") &&
        strstr(jinja, "<think>")) {
        out->kind = QN_CHAT_GLM45;
        return QN_OK;
    }
    if (strstr(jinja, "<|im_start|>")) {
        /* Refuse the ChatML variants whose differences quench does not
         * render, rather than produce a near miss: Qwen3-Coder's XML tool
         * calls, other default system prompts, thinking-only models
         * (QwQ, Qwen3 *-Thinking-2507) that open <think> in the prompt. */
        const char *why = NULL;
        if (strstr(jinja, "<function=")) why = "XML tool calls (Qwen3-Coder)";
        else if (strstr(jinja, "You are Qwen") && !strstr(jinja, k_qwen25_system))
            why = "a default system prompt other than Qwen2.5's";
        else if (strstr(jinja, "<think>") &&
                 !(strstr(jinja, "last_query_index") && strstr(jinja, "enable_thinking")))
            why = "<think> handling other than Qwen3's";
        if (why)
            return qn_fail(QN_ERR_UNSUPPORTED, "chat template: a ChatML template with %s is not "
                           "one quench renders; pass --chat-template chatml|qwen2.5|qwen3|raw to "
                           "choose one explicitly", why);
        out->kind = QN_CHAT_CHATML;
        if (strstr(jinja, k_qwen25_system)) out->default_system = k_qwen25_system;
        if (strstr(jinja, "<think>")) out->qwen3_think = true;
        return QN_OK;
    }
    return qn_fail(QN_ERR_UNSUPPORTED, "chat template not recognised (known: GLM-4.5, ChatML); "
                   "pass --chat-template glm45|chatml|raw");
}

qn_status qn_chat_template_for(const qn_tokenizer *tok, const char *name, qn_chat_template *out) {
    if (name && strcmp(name, "auto") != 0) return qn_chat_template_parse(name, out);
    return qn_chat_template_detect(qn_tokenizer_chat_template(tok), out);
}

qn_status qn_chat_encode(const qn_tokenizer *tok, const qn_chat_template *tpl,
                         const cJSON *messages, const qn_chat_opts *opts, qn_token_ids *ids) {
    char *text;
    size_t len;
    QN_CHECK(qn_chat_render(tpl, messages, opts, &text, &len));
    qn_encode_opts eo = {.split_special = false, .add_special = false};
    qn_status st = qn_tokenizer_encode(tok, text, len, &eo, ids);
    free(text);
    return st;
}
