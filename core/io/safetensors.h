/* safetensors.h — reading and writing Hugging Face safetensors files, single
 * and sharded (model.safetensors.index.json).
 *
 * Format: 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON (starting
 * with '{', possibly padded with trailing spaces), then the data section.
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin,
 * end]} with offsets relative to the data section; the optional key
 * "__metadata__" holds a string -> string map.
 *
 * The reader treats every file as hostile. Beyond what the JSON says, it
 * enforces the format's rule that the tensors tile the data section exactly
 * (the safetensors spec: the byte buffer is entirely indexed, with no holes,
 * which rules out polyglot files): sorted by offset, the first begins at 0,
 * each begins where the previous ended, the last ends at the end of the
 * file. Holes, overlaps, trailing bytes, duplicate names, unknown dtypes,
 * more than QN_ST_MAX_DIMS dims, non-integer or overflowing numbers, byte
 * sizes that differ from prod(shape) * dtype size, headers over
 * QN_ST_MAX_HEADER bytes, non-UTF-8 headers and non-string metadata values
 * are all QN_ERR_FORMAT (QN_ERR_TOO_LARGE for the header cap), with a
 * message naming the file, the tensor where there is one, and the problem.
 *
 * Files are opened lazily: open reads only the 8-byte length and the header
 * (with pread) and maps the file read-only; the kernel reads a tensor's
 * pages only when its data is touched. Data pointers point into the map and
 * may be unaligned for files written by other tools (the writer here aligns
 * every tensor to its element size).
 *
 * Leaves out: dtypes quench does not use (BOOL, U16, F8_E5M2, ...: rejected
 * as unknown), big-endian hosts, writing into an existing file, and any
 * network or hub access.
 */
#ifndef QN_CORE_IO_SAFETENSORS_H
#define QN_CORE_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "quench/status.h"

#define QN_ST_MAX_DIMS 8
/* Largest header accepted, in bytes (the reference implementation's cap). */
#define QN_ST_MAX_HEADER 100000000ull

/* One tensor as the header describes it. Owned by the qn_st_file it came
 * from and valid until that file is closed. */
typedef struct qn_st_tensor {
    const char *name;
    qn_dtype dtype;
    int32_t ndim;                  /* 0 for a scalar */
    int64_t shape[QN_ST_MAX_DIMS]; /* shape[0..ndim-1]; the rest are 0 */
    uint64_t offset;               /* begin, relative to the data section */
    uint64_t nbytes;               /* end - begin == prod(shape) * dtype size */
    const void *data;              /* the bytes, in the map or caller's buffer */
} qn_st_tensor;

typedef struct qn_st_file qn_st_file;

/* Opens and validates the safetensors file at path; *out is set on success
 * and must be released with qn_st_close. On failure *out is NULL and the
 * error message names path and the problem. */
qn_status qn_st_open(const char *path, qn_st_file **out);

/* The same from size bytes at data, which are borrowed, not copied: they
 * must stay valid and unchanged until qn_st_close. label stands for the
 * file name in error messages (copied; NULL means "<memory>"). */
qn_status qn_st_open_memory(const void *data, size_t size, const char *label, qn_st_file **out);

/* Releases the file, its map and every qn_st_tensor it handed out.
 * NULL is a no-op. */
void qn_st_close(qn_st_file *f);

/* The path (or label) the file was opened with. */
const char *qn_st_path(const qn_st_file *f);

/* Tensors in data-offset order, 0 <= i < qn_st_count(f). */
size_t qn_st_count(const qn_st_file *f);
const qn_st_tensor *qn_st_tensor_at(const qn_st_file *f, size_t i);

/* The tensor called name, or NULL (binary search; no error is recorded). */
const qn_st_tensor *qn_st_find(const qn_st_file *f, const char *name);

/* Like qn_st_find, but a missing tensor is QN_ERR_NOT_FOUND with a message
 * naming the file and the tensor. */
qn_status qn_st_get(const qn_st_file *f, const char *name, const qn_st_tensor **out);

/* __metadata__ entries, sorted by key; strings owned by f. */
size_t qn_st_metadata_count(const qn_st_file *f);
void qn_st_metadata_at(const qn_st_file *f, size_t i, const char **key, const char **value);
/* The value for key, or NULL. */
const char *qn_st_metadata_get(const qn_st_file *f, const char *key);

/* Number of elements of t (1 for a scalar). */
uint64_t qn_st_numel(const qn_st_tensor *t);

/* ---- sharded models -------------------------------------------------- */

typedef struct qn_st_model qn_st_model;

/* Opens a model given as
 *   - a directory holding model.safetensors.index.json (sharded) or, failing
 *     that, model.safetensors (single file);
 *   - a path to an index file (*.index.json): its "weight_map" maps tensor
 *     names to shard file names in the same directory (plain names only: no
 *     '/', not starting with '.');
 *   - a path to a single .safetensors file.
 * Only the index (or the single file) is read here; a shard is opened the
 * first time one of its tensors is asked for. Release with
 * qn_st_model_close. Safe to use from several threads. */
qn_status qn_st_model_open(const char *path, qn_st_model **out);
void qn_st_model_close(qn_st_model *m);

/* All tensor names the model has (from the index, or the single file),
 * sorted; 0 <= i < qn_st_model_count(m). Strings owned by m. */
size_t qn_st_model_count(const qn_st_model *m);
const char *qn_st_model_name_at(const qn_st_model *m, size_t i);

/* Looks up name, opening its shard if needed. QN_ERR_NOT_FOUND when the
 * model has no such tensor, or when the shard the index names does not
 * contain it; QN_ERR_IO/QN_ERR_FORMAT when the shard is missing or bad (the
 * message names the shard and the tensor). *out stays valid until
 * qn_st_model_close. */
qn_status qn_st_model_get(qn_st_model *m, const char *name, const qn_st_tensor **out);

/* ---- writer ---------------------------------------------------------- */

typedef struct qn_st_writer qn_st_writer;

/* Starts a new file (or, with qn_st_writer_finish_sharded, a directory) at
 * path. Nothing touches the disk until finish. Release with
 * qn_st_writer_free whether or not finish was called or succeeded. */
qn_status qn_st_writer_init(qn_st_writer **out, const char *path);
void qn_st_writer_free(qn_st_writer *w);

/* Adds a tensor. name and shape are copied; data (prod(shape) * dtype size
 * bytes, little-endian, any alignment) is BORROWED and must stay valid until
 * finish returns. QN_ERR_EXISTS for a name added before; QN_ERR_INVALID for
 * an empty name, "__metadata__", invalid UTF-8, a bad dtype, ndim outside
 * 0..QN_ST_MAX_DIMS or a negative dim. */
qn_status qn_st_writer_add(qn_st_writer *w, const char *name, qn_dtype dtype, int32_t ndim,
                           const int64_t *shape, const void *data);

/* Sets __metadata__[key] = value (both copied; a second call for the same
 * key replaces the value). Both must be valid UTF-8. */
qn_status qn_st_writer_set_metadata(qn_st_writer *w, const char *key, const char *value);

/* Writes the file: header keys sorted by name, header padded with spaces
 * to a multiple of 8 bytes, and the data laid out by element size
 * (largest first), then name, so that every tensor starts at an offset that
 * is a multiple of its element size. The same tensors and metadata always
 * give the same bytes. The file is written to a temporary name in the same
 * directory, flushed, and renamed over path, so readers see either the old
 * file or the complete new one. */
qn_status qn_st_writer_finish(qn_st_writer *w);

/* Writes the tensors as a sharded set into the directory path (created if
 * missing): tensors in name order are cut greedily into shards of at most
 * max_shard_bytes of data (a larger tensor gets a shard to itself), named
 * model-00001-of-0000N.safetensors, each written like qn_st_writer_finish
 * with the writer's metadata, then model.safetensors.index.json
 * ({"metadata": {"total_size": bytes}, "weight_map": {...}}) last, each
 * file atomically. The index is written even for a single shard. */
qn_status qn_st_writer_finish_sharded(qn_st_writer *w, uint64_t max_shard_bytes);

#endif /* QN_CORE_IO_SAFETENSORS_H */
