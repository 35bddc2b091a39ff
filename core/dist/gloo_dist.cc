// gloo_dist.cc — the CPU backend of dist.h: a thin C++ shim over Gloo.
//
// Rendezvous goes through our own Gloo Store on the job's Redis (hiredis,
// URL forms of core/redis_url.h), not Gloo's RedisStore, because that one
// only knows host:port — no unix sockets, passwords, databases or key
// prefixes. Gloo reports failures by throwing; every entry point catches and
// turns them into a qn_status with Gloo's message, so no exception crosses
// into C.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <hiredis/hiredis.h>

#include "core/dist/dist.h"
#include "core/redis_url.h"

namespace {

// A Gloo rendezvous store on Redis. Keys are prefixed; values are binary.
class QnRedisStore : public gloo::rendezvous::Store {
  public:
    QnRedisStore(const qn_redis_url &addr, std::string prefix, std::chrono::milliseconds timeout)
        : addr_(addr), prefix_(std::move(prefix)), timeout_(timeout) {
        connect();
    }
    ~QnRedisStore() override {
        if (ctx_) redisFree(ctx_);
    }

    void set(const std::string &key, const std::vector<char> &data) override {
        std::string k = prefix_ + key;
        const char *argv[] = {"SET", k.c_str(), data.data()};
        size_t lens[] = {3, k.size(), data.size()};
        freeReplyObject(reply(redisCommandArgv(ctx_, 3, argv, lens), "SET"));
    }

    std::vector<char> get(const std::string &key) override {
        wait({key}, timeout_);
        std::string k = prefix_ + key;
        const char *argv[] = {"GET", k.c_str()};
        size_t lens[] = {3, k.size()};
        redisReply *r = reply(redisCommandArgv(ctx_, 2, argv, lens), "GET");
        std::vector<char> out;
        if (r->type == REDIS_REPLY_STRING) out.assign(r->str, r->str + r->len);
        freeReplyObject(r);
        return out;
    }

    void wait(const std::vector<std::string> &keys) override { wait(keys, timeout_); }

    void wait(const std::vector<std::string> &keys, const std::chrono::milliseconds &timeout) override {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (const auto &key : keys) {
            std::string k = prefix_ + key;
            for (;;) {
                const char *argv[] = {"EXISTS", k.c_str()};
                size_t lens[] = {6, k.size()};
                redisReply *r = reply(redisCommandArgv(ctx_, 2, argv, lens), "EXISTS");
                bool there = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
                freeReplyObject(r);
                if (there) break;
                if (std::chrono::steady_clock::now() > deadline)
                    throw std::runtime_error("timed out waiting for rendezvous key " + k);
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
    }

  private:
    void connect() {
        struct timeval tv;
        tv.tv_sec = (long)(timeout_.count() / 1000);
        tv.tv_usec = (long)(timeout_.count() % 1000) * 1000;
        ctx_ = addr_.unix_path[0] ? redisConnectUnixWithTimeout(addr_.unix_path, tv)
                                  : redisConnectWithTimeout(addr_.host, addr_.port, tv);
        if (!ctx_ || ctx_->err)
            throw std::runtime_error(std::string("cannot connect to Redis: ") +
                                     (ctx_ ? ctx_->errstr : "out of memory"));
        if (addr_.password[0]) {
            redisReply *r = addr_.user[0]
                                ? (redisReply *)redisCommand(ctx_, "AUTH %s %s", addr_.user, addr_.password)
                                : (redisReply *)redisCommand(ctx_, "AUTH %s", addr_.password);
            freeReplyObject(reply(r, "AUTH"));
        }
        if (addr_.db) freeReplyObject(reply((redisReply *)redisCommand(ctx_, "SELECT %d", addr_.db), "SELECT"));
    }

    redisReply *reply(void *p, const char *what) {
        redisReply *r = static_cast<redisReply *>(p);
        if (!r) throw std::runtime_error(std::string("Redis ") + what + ": " + ctx_->errstr);
        if (r->type == REDIS_REPLY_ERROR) {
            std::string msg = std::string("Redis ") + what + ": " + r->str;
            freeReplyObject(r);
            throw std::runtime_error(msg);
        }
        return r;
    }

    qn_redis_url addr_;
    std::string prefix_;
    std::chrono::milliseconds timeout_;
    redisContext *ctx_ = nullptr;
};

}  // namespace

struct qn_dist {
    int rank = 0;
    int world_size = 1;
    std::chrono::milliseconds timeout{300000};
    std::shared_ptr<gloo::transport::Device> device;
    std::shared_ptr<gloo::rendezvous::Context> context;
    uint32_t tag = 0;  // collectives in flight get distinct tags
};

static qn_status gloo_failure(const char *op, const std::exception &e) {
    return qn_fail(QN_ERR_NET, "dist %s: %s", op, e.what());
}

extern "C" qn_status qn_dist_init(const qn_dist_config *cfg, qn_dist **out) {
    *out = nullptr;
    if (cfg->world_size < 1 || cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return qn_fail(QN_ERR_RANGE, "dist: rank %d is not in [0, %d)", cfg->rank, cfg->world_size);
    qn_dist *d = new (std::nothrow) qn_dist;
    if (!d) return qn_fail(QN_ERR_NOMEM, "dist: out of memory");
    d->rank = cfg->rank;
    d->world_size = cfg->world_size;
    if (cfg->timeout_ms) d->timeout = std::chrono::milliseconds(cfg->timeout_ms);
    if (cfg->world_size == 1) {
        *out = d;
        return QN_OK;
    }
    if (!cfg->redis_url || !*cfg->redis_url) {
        delete d;
        return qn_fail(QN_ERR_INVALID, "dist: a group of %d ranks needs a Redis URL for rendezvous (QN_REDIS_URL)",
                       cfg->world_size);
    }
    qn_redis_url addr;
    qn_status ps = qn_redis_url_parse(cfg->redis_url, &addr);
    if (ps != QN_OK) {
        delete d;
        return ps;
    }
    try {
        gloo::transport::tcp::attr attr;
        const char *host = cfg->host && *cfg->host ? cfg->host : getenv("QN_DIST_HOST");
        if (host && *host) {
            attr.hostname = host;
        } else {
            char name[256] = {0};
            gethostname(name, sizeof name - 1);
            attr.hostname = name;
        }
        d->device = gloo::transport::tcp::CreateDevice(attr);
        std::string prefix = std::string("quench:") + (cfg->job && *cfg->job ? cfg->job : "default") +
                             ":dist:" + (cfg->group && *cfg->group ? cfg->group : "default") + ":";
        QnRedisStore store(addr, prefix, d->timeout);
        d->context = std::make_shared<gloo::rendezvous::Context>(cfg->rank, cfg->world_size);
        d->context->setTimeout(d->timeout);
        d->context->connectFullMesh(store, d->device);
    } catch (const std::exception &e) {
        qn_status s = qn_fail(QN_ERR_NET, "dist: rank %d of %d could not join group '%s': %s", cfg->rank,
                              cfg->world_size, cfg->group ? cfg->group : "default", e.what());
        delete d;
        return s;
    }
    *out = d;
    return QN_OK;
}

extern "C" qn_status qn_dist_config_from_env(const char *group, qn_dist_config *cfg) {
    std::memset(cfg, 0, sizeof *cfg);
    cfg->world_size = 1;
    cfg->group = group;
    auto read_int = [](const char *name, int lo, int hi, int *out) -> qn_status {
        const char *v = getenv(name);
        if (!v || !*v) return QN_ERR_NOT_FOUND;
        char *end = nullptr;
        long x = strtol(v, &end, 10);
        if (*end || x < lo || x > hi)
            return qn_fail(QN_ERR_RANGE, "environment variable %s='%s' must be an integer in [%d, %d]",
                           name, v, lo, hi);
        *out = (int)x;
        return QN_OK;
    };
    qn_status s = read_int("QN_WORLD_SIZE", 1, 1 << 20, &cfg->world_size);
    if (s != QN_OK && s != QN_ERR_NOT_FOUND) return s;
    s = read_int("QN_RANK", 0, cfg->world_size - 1, &cfg->rank);
    if (s == QN_ERR_NOT_FOUND && cfg->world_size > 1)
        return qn_fail(QN_ERR_INVALID, "QN_WORLD_SIZE=%d but QN_RANK is not set", cfg->world_size);
    if (s != QN_OK && s != QN_ERR_NOT_FOUND) return s;
    s = read_int("QN_LOCAL_RANK", 0, 1 << 20, &cfg->local_rank);
    if (s != QN_OK && s != QN_ERR_NOT_FOUND) return s;
    cfg->redis_url = getenv("QN_REDIS_URL");
    cfg->job = getenv("QN_JOB");
    cfg->host = getenv("QN_DIST_HOST");
    return QN_OK;
}

extern "C" void qn_dist_free(qn_dist *d) { delete d; }
extern "C" int qn_dist_rank(const qn_dist *d) { return d->rank; }
extern "C" int qn_dist_world_size(const qn_dist *d) { return d->world_size; }

using ReduceFn = void (*)(void *, const void *, const void *, size_t);

template <typename T>
static qn_status allreduce(qn_dist *d, T *buf, size_t n, ReduceFn fn, const char *op) {
    if (d->world_size == 1 || n == 0) return QN_OK;
    try {
        gloo::AllreduceOptions opts(d->context);
        opts.setInput(buf, n);
        opts.setOutput(buf, n);
        opts.setReduceFunction(fn);
        opts.setTag(d->tag++);
        opts.setTimeout(d->timeout);
        gloo::allreduce(opts);
    } catch (const std::exception &e) {
        return gloo_failure(op, e);
    }
    return QN_OK;
}

extern "C" qn_status qn_dist_allreduce_sum_f32(qn_dist *d, float *buf, size_t n) {
    return allreduce<float>(d, buf, n,
                            static_cast<ReduceFn>(&gloo::sum<float>),
                            "allreduce(sum, f32)");
}

extern "C" qn_status qn_dist_allreduce_sum_f64(qn_dist *d, double *buf, size_t n) {
    return allreduce<double>(d, buf, n,
                             static_cast<ReduceFn>(&gloo::sum<double>),
                             "allreduce(sum, f64)");
}

extern "C" qn_status qn_dist_allreduce_max_i64(qn_dist *d, int64_t *buf, size_t n) {
    return allreduce<int64_t>(d, buf, n,
                              static_cast<ReduceFn>(&gloo::max<int64_t>),
                              "allreduce(max, i64)");
}

extern "C" qn_status qn_dist_broadcast(qn_dist *d, void *buf, size_t bytes, int root) {
    if (root < 0 || root >= d->world_size)
        return qn_fail(QN_ERR_RANGE, "dist broadcast: root %d is not in [0, %d)", root, d->world_size);
    if (d->world_size == 1 || bytes == 0) return QN_OK;
    try {
        gloo::BroadcastOptions opts(d->context);
        opts.setOutput(static_cast<uint8_t *>(buf), bytes);
        opts.setRoot(root);
        opts.setTag(d->tag++);
        opts.setTimeout(d->timeout);
        gloo::broadcast(opts);
    } catch (const std::exception &e) {
        return gloo_failure("broadcast", e);
    }
    return QN_OK;
}

extern "C" qn_status qn_dist_barrier(qn_dist *d) {
    if (d->world_size == 1) return QN_OK;
    try {
        gloo::BarrierOptions opts(d->context);
        opts.setTag(d->tag++);
        opts.setTimeout(d->timeout);
        gloo::barrier(opts);
    } catch (const std::exception &e) {
        return gloo_failure("barrier", e);
    }
    return QN_OK;
}
