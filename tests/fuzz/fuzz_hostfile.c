/* fuzz_hostfile.c — the launcher's hostfile parser (cli/launch_hosts.c:
 * qn_hostfile_parse) on arbitrary bytes. Checks the contract of
 * launch_hosts.h: on success at least one host, every name non-empty, at
 * most QN_HOST_NAME_MAX long, from the allowed characters, not starting
 * with '-', listed once, slots in [1, QN_HOST_SLOTS_MAX] and within
 * max_slots when one is given; on failure a message naming the path and
 * nothing owned. cli/ is linked only into the quench binary, so the
 * parser's source is compiled in here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/launch_hosts.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_host_list l;
    qn_status st = qn_hostfile_parse((const char *)data, size, "fz", &l);
    if (st != QN_OK) {
        if (strncmp(qn_last_error(), "fz", 2) != 0) abort();
        if (l.n || l.hosts) abort();
        return 0;
    }
    if (l.n == 0 || l.n > QN_HOSTS_MAX || l.n > l.cap) abort();
    for (size_t i = 0; i < l.n; i++) {
        const qn_host *h = &l.hosts[i];
        size_t len = strlen(h->name);
        if (len == 0 || len > QN_HOST_NAME_MAX || h->name[0] == '-') abort();
        for (size_t k = 0; k < len; k++)
            if (!is_name_char(h->name[k], true)) abort();
        /* the name must occur in the input */
        if (!memmem(data, size, h->name, len)) abort();
        if (h->slots < 1 || h->slots > QN_HOST_SLOTS_MAX) abort();
        if (h->max_slots && h->slots > h->max_slots) abort();
        for (size_t j = 0; j < i; j++)
            if (strcmp(l.hosts[j].name, h->name) == 0) abort();
    }
    qn_host_list_free(&l);
    return 0;
}
