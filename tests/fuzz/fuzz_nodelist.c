/* fuzz_nodelist.c — the launcher's Slurm parsers (cli/launch_hosts.c) on
 * arbitrary bytes. The first byte picks the parser (even:
 * qn_slurm_nodelist_expand for SLURM_JOB_NODELIST, odd:
 * qn_slurm_tasks_per_node for SLURM_TASKS_PER_NODE); the rest, cut at the
 * first NUL, is the string. Checks the contracts of launch_hosts.h: node
 * lists give at most QN_HOSTS_MAX unique names from [A-Za-z0-9._-], not
 * starting with '-', each with one slot, and a list without brackets gives
 * its comma-separated items back unchanged; task counts give at most
 * QN_HOSTS_MAX values in range; on failure a message and nothing owned.
 * cli/ is linked only into the quench binary, so the source is compiled
 * in here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/launch_hosts.c"

static void check_nodelist(const char *s) {
    qn_host_list l;
    qn_status st = qn_slurm_nodelist_expand(s, &l);
    if (st != QN_OK) {
        if (!qn_last_error()[0]) abort();
        if (l.n || l.hosts) abort();
        return;
    }
    if (l.n == 0 || l.n > QN_HOSTS_MAX) abort();
    for (size_t i = 0; i < l.n; i++) {
        const char *name = l.hosts[i].name;
        size_t len = strlen(name);
        if (len == 0 || len > QN_HOST_NAME_MAX || name[0] == '-') abort();
        for (size_t k = 0; k < len; k++)
            if (!is_name_char(name[k], false)) abort();
        if (l.hosts[i].slots != 1) abort();
    }
    if (nl_check_unique(&l) != QN_OK) abort();
    if (!strchr(s, '[')) {
        /* no brackets: the names are the items, in order */
        const char *p = s;
        for (size_t i = 0; i < l.n; i++) {
            size_t len = strlen(l.hosts[i].name);
            if (strncmp(p, l.hosts[i].name, len) != 0) abort();
            p += len;
            if (*p != (i + 1 < l.n ? ',' : '\0')) abort();
            p++;
        }
    }
    qn_host_list_free(&l);
}

static void check_tasks(const char *s) {
    uint32_t *c = NULL;
    size_t n = 0;
    qn_status st = qn_slurm_tasks_per_node(s, &c, &n);
    if (st != QN_OK) {
        if (!qn_last_error()[0] || c || n) abort();
        return;
    }
    if (n == 0 || n > QN_HOSTS_MAX) abort();
    for (size_t i = 0; i < n; i++)
        if (c[i] > QN_HOST_SLOTS_MAX) abort();
    free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char *s = malloc(size);
    if (!s) return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] & 1) check_tasks(s);
    else check_nodelist(s);
    free(s);
    return 0;
}
