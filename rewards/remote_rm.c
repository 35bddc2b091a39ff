/* remote_rm.c — the remote reward client on libcurl's multi interface.
 *
 * One easy handle per concurrency slot, reused for every request that slot
 * sends, so keep-alive connections are reused. Jobs wait in an array with
 * the time they may start (backoff); the loop fills free slots, runs
 * curl_multi_poll, and classifies each finished transfer. Everything runs in
 * the calling thread. Left out: HTTP/2, authentication headers, TLS options
 * beyond libcurl's defaults.
 */
#include "rewards/remote_rm.h"
#include "core/clock.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

enum { MAX_BODY = 1 << 20 };

typedef struct slot {
    CURL *easy;
    long job; /* index into jobs, -1 when idle */
    char *resp;
    size_t resp_len;
    bool overflow;
    char *body; /* request body of the current job */
} slot;

typedef struct job {
    int attempts;
    double not_before; /* monotonic seconds */
    bool done;
} job;

struct qn_remote_rm {
    char *url;
    char *reward_key;
    double timeout_s, backoff_s;
    int32_t concurrency, retries;
    CURLM *multi;
    struct curl_slist *headers;
    slot *slots;
    uint64_t rng;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc;
static void curl_init_once(void) {
    g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static double rand01(qn_remote_rm *rm) {
    rm->rng ^= rm->rng << 13;
    rm->rng ^= rm->rng >> 7;
    rm->rng ^= rm->rng << 17;
    return (double)(rm->rng >> 11) * (1.0 / 9007199254740992.0);
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *user) {
    slot *s = user;
    size_t n = size * nmemb;
    if (s->resp_len + n > MAX_BODY) {
        s->overflow = true;
        return 0; /* aborts the transfer */
    }
    char *p = realloc(s->resp, s->resp_len + n + 1);
    if (!p) return 0;
    s->resp = p;
    memcpy(s->resp + s->resp_len, data, n);
    s->resp_len += n;
    s->resp[s->resp_len] = '\0';
    return n;
}

qn_status qn_remote_rm_init(qn_remote_rm **out, const qn_remote_rm_config *cfg) {
    *out = NULL;
    if (!cfg->url ||
        (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0))
        return qn_fail(QN_ERR_INVALID,
                       "remote_rm: --rm-url must be an http:// or https:// URL, "
                       "got '%s'",
                       cfg->url ? cfg->url : "(none)");
    if (!(cfg->timeout_s > 0) || cfg->concurrency < 1 || cfg->retries < 0 || !(cfg->backoff_s >= 0))
        return qn_fail(QN_ERR_INVALID, "remote_rm: timeout must be > 0, concurrency >= 1, "
                                       "retries >= 0, backoff >= 0");
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return qn_fail(QN_ERR_NET, "remote_rm: curl_global_init: %s",
                       curl_easy_strerror(g_curl_init_rc));
    qn_remote_rm *rm = calloc(1, sizeof *rm);
    if (!rm) return qn_fail(QN_ERR_NOMEM, "remote_rm: out of memory");
    rm->url = strdup(cfg->url);
    rm->reward_key = cfg->reward_key ? strdup(cfg->reward_key) : NULL;
    rm->timeout_s = cfg->timeout_s;
    rm->backoff_s = cfg->backoff_s;
    rm->concurrency = cfg->concurrency;
    rm->retries = cfg->retries;
    rm->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)qn_now_s() ^ ((uint64_t)(uintptr_t)rm << 7);
    rm->multi = curl_multi_init();
    rm->headers = curl_slist_append(NULL, "Content-Type: application/json");
    rm->slots = calloc((size_t)rm->concurrency, sizeof *rm->slots);
    if (!rm->url || !rm->multi || !rm->headers || !rm->slots) {
        qn_remote_rm_free(rm);
        return qn_fail(QN_ERR_NOMEM, "remote_rm: out of memory");
    }
    curl_multi_setopt(rm->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)rm->concurrency);
    curl_multi_setopt(rm->multi, CURLMOPT_MAXCONNECTS, (long)rm->concurrency);
    for (int32_t i = 0; i < rm->concurrency; i++) {
        slot *s = &rm->slots[i];
        s->job = -1;
        s->easy = curl_easy_init();
        if (!s->easy) {
            qn_remote_rm_free(rm);
            return qn_fail(QN_ERR_NOMEM, "remote_rm: curl_easy_init failed");
        }
        curl_easy_setopt(s->easy, CURLOPT_URL, rm->url);
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, rm->headers);
        curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)(rm->timeout_s * 1000));
        curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(rm->timeout_s * 1000));
        curl_easy_setopt(s->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    }
    *out = rm;
    return QN_OK;
}

void qn_remote_rm_free(qn_remote_rm *rm) {
    if (!rm) return;
    if (rm->slots) {
        for (int32_t i = 0; i < rm->concurrency; i++) {
            slot *s = &rm->slots[i];
            if (s->easy) {
                if (s->job >= 0) curl_multi_remove_handle(rm->multi, s->easy);
                curl_easy_cleanup(s->easy);
            }
            free(s->resp);
            free(s->body);
        }
        free(rm->slots);
    }
    if (rm->multi) curl_multi_cleanup(rm->multi);
    curl_slist_free_all(rm->headers);
    free(rm->url);
    free(rm->reward_key);
    free(rm);
}

static char *make_body(const qn_reward_sample *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "prompt", s->prompt ? s->prompt : "");
    cJSON_AddStringToObject(o, "response", s->response ? s->response : "");
    cJSON_AddStringToObject(o, "label", s->label ? s->label : "");
    cJSON *meta = s->metadata_json ? cJSON_Parse(s->metadata_json) : NULL;
    if (meta && cJSON_IsObject(meta))
        cJSON_AddItemToObject(o, "metadata", meta);
    else
        cJSON_Delete(meta);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

static void set_fail(qn_reward_score *out, qn_reward_status st, const char *fmt, const char *a,
                     int attempts) {
    out->status = st;
    out->value = NAN;
    char detail[96];
    snprintf(detail, sizeof detail, fmt, a);
    snprintf(out->message, sizeof out->message, "remote_rm: %s after %d attempt%s", detail,
             attempts, attempts == 1 ? "" : "s");
}

/* Parses a 200 answer into out; false when it is not usable. */
static bool parse_answer(qn_remote_rm *rm, const char *text, qn_reward_score *out) {
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    if (!j) return false;
    bool ok = false;
    if (cJSON_IsNumber(j)) {
        out->value = j->valuedouble;
        ok = true;
    } else if (cJSON_IsObject(j)) {
        cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "reward");
        if (!cJSON_IsNumber(r)) r = cJSON_GetObjectItemCaseSensitive(j, "score");
        if (cJSON_IsNumber(r)) {
            out->value = r->valuedouble;
            ok = true;
        } else if (rm->reward_key) {
            out->value = NAN;
            ok = true;
        }
        cJSON *it;
        cJSON_ArrayForEach(it, j) {
            if (cJSON_IsNumber(it) && it->string && it != r)
                qn_reward_score_set_named(out, it->string, it->valuedouble);
        }
    }
    cJSON_Delete(j);
    return ok;
}

qn_status qn_remote_rm_score(qn_remote_rm *rm, const qn_reward_sample *samples, size_t n,
                             qn_reward_score *out, uint64_t *retries) {
    job *jobs = calloc(n ? n : 1, sizeof *jobs);
    /* ready: FIFO of job indices that may start now; waiting: jobs in backoff */
    size_t *ready = malloc((n ? n : 1) * sizeof *ready);
    size_t *waiting = malloc((n ? n : 1) * sizeof *waiting);
    if (!jobs || !ready || !waiting) {
        free(jobs);
        free(ready);
        free(waiting);
        return qn_fail(QN_ERR_NOMEM, "remote_rm: out of memory");
    }
    size_t r_head = 0, r_count = 0, n_waiting = 0;
    for (size_t j = 0; j < n; j++)
        ready[r_count++] = j;
    size_t remaining = n;
    int running = 0;
    qn_status st = QN_OK;
    while (remaining > 0) {
        double now = qn_now_s(), soonest = INFINITY;
        for (size_t w = 0; w < n_waiting;) {
            size_t j = waiting[w];
            if (jobs[j].not_before <= now) {
                ready[(r_head + r_count++) % n] = j;
                waiting[w] = waiting[--n_waiting];
            } else {
                if (jobs[j].not_before < soonest) soonest = jobs[j].not_before;
                w++;
            }
        }
        for (int32_t si = 0; si < rm->concurrency && r_count > 0; si++) {
            slot *s = &rm->slots[si];
            if (s->job >= 0) continue;
            size_t pick = ready[r_head];
            r_head = (r_head + 1) % n;
            r_count--;
            free(s->body);
            s->body = make_body(&samples[pick]);
            if (!s->body) {
                st = qn_fail(QN_ERR_NOMEM, "remote_rm: out of memory");
                goto done;
            }
            s->resp_len = 0;
            s->overflow = false;
            curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
            curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(s->body));
            s->job = (long)pick;
            jobs[pick].attempts++;
            curl_multi_add_handle(rm->multi, s->easy);
        }
        CURLMcode mc = curl_multi_perform(rm->multi, &running);
        if (mc != CURLM_OK) {
            st = qn_fail(QN_ERR_NET, "remote_rm: curl_multi_perform: %s", curl_multi_strerror(mc));
            goto done;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(rm->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            slot *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(rm->multi, msg->easy_handle);
            long j = s->job;
            s->job = -1;
            qn_reward_score *o = &out[j];
            long code = 0;
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
            bool retry = false;
            char what[64];
            qn_reward_status fail = QN_REWARD_OK;
            if (rc == CURLE_OK && code >= 200 && code < 300) {
                memset(o, 0, sizeof *o);
                if (s->resp_len > 0) s->resp[s->resp_len] = '\0';
                if (parse_answer(rm, s->resp_len ? s->resp : NULL, o)) {
                    o->status = QN_REWARD_OK;
                } else {
                    memset(o, 0, sizeof *o);
                    set_fail(o, QN_REWARD_BAD_RESPONSE, "%s",
                             "HTTP 200 without a usable JSON reward", jobs[j].attempts);
                }
                jobs[j].done = true;
                remaining--;
                continue;
            }
            if (rc == CURLE_OK) {
                fail = QN_REWARD_HTTP_ERROR;
                snprintf(what, sizeof what, "HTTP %ld", code);
                retry = code >= 500 || code == 408 || code == 429;
            } else if (rc == CURLE_OPERATION_TIMEDOUT) {
                fail = QN_REWARD_TIMEOUT;
                snprintf(what, sizeof what, "no answer within %.3g s", rm->timeout_s);
                retry = true;
            } else if (s->overflow) {
                fail = QN_REWARD_BAD_RESPONSE;
                snprintf(what, sizeof what, "answer larger than %d bytes", MAX_BODY);
            } else {
                fail = QN_REWARD_NETWORK_ERROR;
                snprintf(what, sizeof what, "%s", curl_easy_strerror(rc));
                retry = true;
            }
            if (retry && jobs[j].attempts <= rm->retries) {
                double wait = rm->backoff_s * ldexp(1.0, jobs[j].attempts - 1) * (0.5 + rand01(rm));
                jobs[j].not_before = qn_now_s() + wait;
                waiting[n_waiting++] = (size_t)j;
                if (retries) (*retries)++;
                continue;
            }
            memset(o, 0, sizeof *o);
            set_fail(o, fail, "%s", what, jobs[j].attempts);
            jobs[j].done = true;
            remaining--;
        }
        if (remaining == 0) break;
        /* a slot freed above can start the next job now, not after a poll */
        bool idle_slot = false;
        for (int32_t si = 0; si < rm->concurrency && !idle_slot; si++)
            idle_slot = rm->slots[si].job < 0;
        if (idle_slot && r_count > 0) continue;
        double wait_s = 0.1;
        if (isfinite(soonest)) wait_s = fmin(wait_s, fmax(0.0, soonest - qn_now_s()));
        curl_multi_poll(rm->multi, NULL, 0, (int)(wait_s * 1000) + 1, NULL);
    }
done:
    for (int32_t si = 0; si < rm->concurrency; si++) {
        slot *s = &rm->slots[si];
        if (s->job >= 0) {
            curl_multi_remove_handle(rm->multi, s->easy);
            s->job = -1;
        }
    }
    if (st != QN_OK) {
        for (size_t j = 0; j < n; j++) {
            if (!jobs[j].done) {
                memset(&out[j], 0, sizeof out[j]);
                set_fail(&out[j], QN_REWARD_NETWORK_ERROR, "%s", "client failure",
                         jobs[j].attempts);
            }
        }
    }
    free(jobs);
    free(ready);
    free(waiting);
    return st;
}
