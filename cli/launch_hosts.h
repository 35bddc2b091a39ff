/* launch_hosts.h — the host lists `quench launch` places processes on:
 * MPI-style hostfiles (--hostfile) and Slurm's compressed node lists
 * (SLURM_JOB_NODELIST) with its per-node task counts
 * (SLURM_TASKS_PER_NODE).
 *
 * Parsing is separate from launching so that it can be unit-tested and
 * fuzzed on byte strings (tests/unit/test_launch_hosts.c and
 * tests/fuzz/fuzz_{hostfile,nodelist}.c include launch_hosts.c, since cli/
 * is linked only into the quench binary). Host names are checked against a
 * small character set (letters, digits, '.', '-', '_', and in hostfiles ':'
 * and '@' for IPv6 addresses and user@host) because they end up on ssh
 * and srun command lines. Leaves out: Open MPI's relative node syntax
 * (+n0, +e), rankfiles, "^host" exclusions, its count=/cpu= slot synonyms
 * and its port= / username= keys; Slurm host lists with a step
 * ("n[1-9:2]"), nested brackets and whitespace separators. */
#ifndef QN_CLI_LAUNCH_HOSTS_H
#define QN_CLI_LAUNCH_HOSTS_H

#include <stddef.h>
#include <stdint.h>

#include "quench/status.h"

/* Bounds: more hosts than this in one list is taken to be a mistake (a
 * typo such as n[1-1000000]); longer names than this are not host names. */
#define QN_HOSTS_MAX 65536u
#define QN_HOST_NAME_MAX 255u
#define QN_HOST_SLOTS_MAX 65536u

typedef struct qn_host {
    char *name;         /* owned, NUL-terminated, never empty */
    uint32_t slots;     /* processes to place on this host, >= 1 */
    uint32_t max_slots; /* upper bound given in the hostfile; 0: none given */
} qn_host;

/* Hosts in the order they were first named. Zero-initialise, fill with one
 * of the parsers below, release with qn_host_list_free. */
typedef struct qn_host_list {
    qn_host *hosts;
    size_t n;
    size_t cap;
} qn_host_list;

/* Frees every name and the array, and zeroes *l. NULL is a no-op. */
void qn_host_list_free(qn_host_list *l);

/* Sum of slots over the list (saturates at UINT32_MAX). */
uint32_t qn_host_list_total_slots(const qn_host_list *l);

/* Parses text[0..len) (need not be NUL-terminated) as an MPI hostfile:
 * one host per line, "HOST [slots=N] [max_slots=M]" ("max-slots" is
 * accepted too), fields separated by spaces or tabs, '#' starts a comment
 * that runs to the end of the line, blank lines and CRLF line ends are
 * fine. slots defaults to 1; with only max_slots=M given, slots is M (as
 * Open MPI does); max_slots below slots is an error. A host named again on
 * a later line is handled as Open MPI does: a bare repeat adds one slot
 * ("a\na\n" is a with 2 slots), a repeat that carries slots=/max_slots= is
 * an error (Open MPI refuses a second slot count for one host). A name
 * that starts with '-' is refused (ssh would take it for an option). N and M
 * are in [1, QN_HOST_SLOTS_MAX]; slot 0 hosts are refused, unlike Open MPI.
 * A file without hosts is an error. On success *out (zero-initialised by
 * the caller or freed before) holds the hosts; on failure it holds nothing
 * and qn_last_error() reads "PATH:LINE: reason", e.g.
 * "hosts.txt:3: slots=abc: expected an integer in [1, 65536]"
 * (QN_ERR_FORMAT; QN_ERR_TOO_LARGE past QN_HOSTS_MAX hosts). */
qn_status qn_hostfile_parse(const char *text, size_t len, const char *path_for_errors,
                            qn_host_list *out);

/* Expands a Slurm compressed node list (NUL-terminated) such as
 * "node[01-03,07],gpu5" into one host per name with slots = 1. Items are
 * separated by commas outside brackets; an item is literal text with any
 * number of bracket groups, each a comma list of N or LO-HI with decimal
 * numbers. Zero padding is kept: a range is printed with at least as many
 * digits as its LO has ("n[008-010]" gives n008 n009 n010, "n[8-10]" gives
 * n8 n9 n10). With several groups in one item the first group varies
 * slowest: "r[1-2]-n[1-2]" gives r1-n1 r1-n2 r2-n1 r2-n2. Errors
 * (QN_ERR_FORMAT unless said): an empty list or item, unbalanced or nested
 * brackets, an empty group or range bound, a non-digit in a group, LO > HI,
 * numbers over 9 digits, a name over QN_HOST_NAME_MAX, with a character
 * outside [A-Za-z0-9._-] or starting with '-', a name listed twice, and
 * more than QN_HOSTS_MAX names in all (QN_ERR_TOO_LARGE, checked before
 * anything is expanded).
 * *out as for qn_hostfile_parse. */
qn_status qn_slurm_nodelist_expand(const char *list, qn_host_list *out);

/* Expands SLURM_TASKS_PER_NODE (NUL-terminated) such as "2(x3),1" into one
 * count per node: {2, 2, 2, 1}. Items are "N" or "N(xR)", N in
 * [0, QN_HOST_SLOTS_MAX], R in [1, QN_HOSTS_MAX], at most QN_HOSTS_MAX
 * nodes in all. On success *counts is a malloc'd array of *n_nodes values
 * (the caller frees it); on failure *counts is NULL, *n_nodes 0 and
 * qn_last_error() names the problem (QN_ERR_FORMAT, QN_ERR_TOO_LARGE). */
qn_status qn_slurm_tasks_per_node(const char *spec, uint32_t **counts, size_t *n_nodes);

#endif
