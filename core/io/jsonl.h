/* jsonl.h — reading JSON-lines input files line by line.
 *
 * Every tool that takes a JSONL file (logprobs, grad, train-step) wants the
 * same things: the 1-based line number for error messages, trailing
 * "\r\n" and spaces stripped, empty lines skipped, and the first failure
 * stopping the read. The line parser itself is the caller's. */
#ifndef QN_CORE_IO_JSONL_H
#define QN_CORE_IO_JSONL_H

#include "quench/status.h"

/* Called for each non-empty line: text is NUL-terminated (valid only during
 * the call), line is 1-based. A non-QN_OK return stops the read and is
 * returned by qn_jsonl_foreach. */
typedef qn_status (*qn_jsonl_line_fn)(const char *text, long line, void *user);

/* Reads path line by line; QN_ERR_IO naming the file if it cannot be opened. */
qn_status qn_jsonl_foreach(const char *path, qn_jsonl_line_fn fn, void *user);

#endif
