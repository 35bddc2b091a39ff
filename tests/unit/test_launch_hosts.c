/* test_launch_hosts.c — the host lists of `quench launch`
 * (cli/launch_hosts.c, compiled in here because cli/ is linked only into the
 * quench binary):
 *   - hostfiles: slots/max_slots, comments, blank lines, CRLF, a missing
 *     final newline, Open MPI's rule for repeated hosts, and errors that
 *     name PATH:LINE for bad keys, values, characters and repeats;
 *   - Slurm node lists: plain names, ranges, zero padding, several groups
 *     in one name (first group slowest), and the errors (brackets, ranges,
 *     empty names, duplicates, the size cap, also exactly at the cap);
 *   - SLURM_TASKS_PER_NODE "2(x3),1" and its errors.
 * After every failure the output owns nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/launch_hosts.c"

/* ---- helpers ----------------------------------------------------------- */

static qn_status parse_hf(const char *text, qn_host_list *l) {
    return qn_hostfile_parse(text, strlen(text), "hosts.txt", l);
}

/* Asserts that the list is exactly the names in the space-separated
 * `expected` (slots ignored). */
static void assert_names(const qn_host_list *l, const char *expected) {
    char buf[4096];
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        int w = snprintf(buf + n, sizeof buf - n, "%s%s", i ? " " : "", l->hosts[i].name);
        assert_true(w > 0 && (size_t)w < sizeof buf - n);
        n += (size_t)w;
    }
    assert_string_equal(buf, expected);
}

static void assert_host(const qn_host_list *l, size_t i, const char *name, uint32_t slots,
                        uint32_t max_slots) {
    assert_true(i < l->n);
    assert_string_equal(l->hosts[i].name, name);
    assert_int_equal(l->hosts[i].slots, slots);
    assert_int_equal(l->hosts[i].max_slots, max_slots);
}

/* A failure with `st` whose message contains `needle`, and nothing owned. */
static void assert_hf_error(const char *text, qn_status st, const char *needle) {
    qn_host_list l;
    qn_clear_error();
    qn_status got = parse_hf(text, &l);
    if (got != st || !strstr(qn_last_error(), needle))
        fail_msg("hostfile %s: got %s '%s', want %s containing '%s'", text, qn_status_name(got),
                 qn_last_error(), qn_status_name(st), needle);
    assert_int_equal(l.n, 0);
    assert_null(l.hosts);
}

static void assert_nl(const char *list, const char *expected) {
    qn_host_list l;
    qn_status st = qn_slurm_nodelist_expand(list, &l);
    if (st != QN_OK) fail_msg("node list '%s': %s", list, qn_last_error());
    assert_names(&l, expected);
    for (size_t i = 0; i < l.n; i++) assert_int_equal(l.hosts[i].slots, 1);
    qn_host_list_free(&l);
}

static void assert_nl_error(const char *list, qn_status st, const char *needle) {
    qn_host_list l;
    qn_clear_error();
    qn_status got = qn_slurm_nodelist_expand(list, &l);
    if (got != st || !strstr(qn_last_error(), needle))
        fail_msg("node list '%s': got %s '%s', want %s containing '%s'", list,
                 qn_status_name(got), qn_last_error(), qn_status_name(st), needle);
    assert_int_equal(l.n, 0);
    assert_null(l.hosts);
}

/* ---- hostfile ---------------------------------------------------------- */

static void test_hostfile_basic(void **state) {
    (void)state;
    qn_host_list l;
    const char *text = "# two GPU boxes and a CPU one\n"
                       "\n"
                       "gpu-a slots=8\n"
                       "  gpu-b\tslots=8 max_slots=16   # trailing comment\n"
                       "   \t\n"
                       "cpu.example.org\n"
                       "spare max-slots=4\n";
    assert_int_equal(parse_hf(text, &l), QN_OK);
    assert_int_equal(l.n, 4);
    assert_host(&l, 0, "gpu-a", 8, 0);
    assert_host(&l, 1, "gpu-b", 8, 16);
    assert_host(&l, 2, "cpu.example.org", 1, 0);
    assert_host(&l, 3, "spare", 4, 4); /* only max_slots: slots = max_slots */
    assert_int_equal(qn_host_list_total_slots(&l), 21);
    qn_host_list_free(&l);
    assert_int_equal(l.n, 0);
    qn_host_list_free(&l); /* twice is fine */
    qn_host_list_free(NULL);
}

static void test_hostfile_line_ends(void **state) {
    (void)state;
    qn_host_list l;
    /* CRLF, no final newline, comment glued to the name, user@host, IPv6 */
    assert_int_equal(parse_hf("a slots=2\r\nb#c\r\nroot@10.0.0.3\r\n::1 slots=3", &l), QN_OK);
    assert_int_equal(l.n, 4);
    assert_host(&l, 0, "a", 2, 0);
    assert_host(&l, 1, "b", 1, 0);
    assert_host(&l, 2, "root@10.0.0.3", 1, 0);
    assert_host(&l, 3, "::1", 3, 0);
    qn_host_list_free(&l);
    /* not NUL-terminated: only len bytes are read */
    const char buf[] = {'x', '\n', 'y', 'z'};
    assert_int_equal(qn_hostfile_parse(buf, 3, "b", &l), QN_OK);
    assert_names(&l, "x y");
    qn_host_list_free(&l);
}

static void test_hostfile_repeats(void **state) {
    (void)state;
    qn_host_list l;
    /* Open MPI: a bare repeat adds one slot, order of first mention kept */
    assert_int_equal(parse_hf("a\nb slots=2\na\nb\na\n", &l), QN_OK);
    assert_int_equal(l.n, 2);
    assert_host(&l, 0, "a", 3, 0);
    assert_host(&l, 1, "b", 3, 0);
    qn_host_list_free(&l);
    assert_int_equal(parse_hf("a slots=1 max_slots=2\na\n", &l), QN_OK);
    assert_host(&l, 0, "a", 2, 2);
    qn_host_list_free(&l);
    assert_hf_error("a max_slots=2\na\n", QN_ERR_FORMAT, "3 slots would exceed its max_slots=2");
    assert_hf_error("a slots=1 max_slots=2\na\na\n", QN_ERR_FORMAT,
                    "hosts.txt:3: host 'a' listed again");
    assert_hf_error("a\nb\na slots=2\n", QN_ERR_FORMAT, "hosts.txt:3: host 'a' is listed again");
    assert_hf_error("a slots=1\na max_slots=9\n", QN_ERR_FORMAT, "hosts.txt:2:");
    /* names are compared exactly */
    assert_int_equal(parse_hf("a\nA\naa\n", &l), QN_OK);
    assert_names(&l, "a A aa");
    qn_host_list_free(&l);
}

static void test_hostfile_errors(void **state) {
    (void)state;
    assert_hf_error("", QN_ERR_FORMAT, "hosts.txt: no hosts");
    assert_hf_error("# only\n\n   \n", QN_ERR_FORMAT, "hosts.txt: no hosts");
    assert_hf_error("a\nb\nc\n\nd slots=0\n", QN_ERR_FORMAT, "hosts.txt:5: slots=0");
    assert_hf_error("a slots=abc\n", QN_ERR_FORMAT, "hosts.txt:1: slots=abc: expected an integer");
    assert_hf_error("a slots=\n", QN_ERR_FORMAT, "hosts.txt:1: slots=");
    assert_hf_error("a slots=-1\n", QN_ERR_FORMAT, "hosts.txt:1: slots=-1");
    assert_hf_error("a slots=1x\n", QN_ERR_FORMAT, "hosts.txt:1: slots=1x");
    assert_hf_error("a slots=65537\n", QN_ERR_FORMAT, "hosts.txt:1: slots=65537");
    assert_hf_error("a slots=99999999999999999999\n", QN_ERR_FORMAT, "hosts.txt:1:");
    assert_hf_error("a slots = 4\n", QN_ERR_FORMAT, "hosts.txt:1: 'slots': expected slots=N");
    assert_hf_error("a b\n", QN_ERR_FORMAT, "hosts.txt:1: 'b': expected slots=N");
    assert_hf_error("a cpu=4\n", QN_ERR_FORMAT, "hosts.txt:1: unknown key 'cpu'");
    assert_hf_error("a =4\n", QN_ERR_FORMAT, "hosts.txt:1: unknown key ''");
    assert_hf_error("a slots=2 slots=3\n", QN_ERR_FORMAT, "hosts.txt:1: slots given twice");
    assert_hf_error("a slots=4 max_slots=2\n", QN_ERR_FORMAT,
                    "hosts.txt:1: host 'a': max_slots=2 is below slots=4");
    assert_hf_error("ok\na;rm -rf /\n", QN_ERR_FORMAT, "hosts.txt:2: host 'a;rm': character 0x3b");
    assert_hf_error("a$(x)\n", QN_ERR_FORMAT, "character 0x24");
    assert_hf_error("n[1-2]\n", QN_ERR_FORMAT, "character 0x5b");
    assert_hf_error("-oProxyCommand=x\n", QN_ERR_FORMAT, "may not start with '-'");
    assert_hf_error("a\nb\x01\n", QN_ERR_FORMAT, "hosts.txt:2: host 'b\x01': character 0x01");
    /* a NUL byte inside the given length */
    qn_host_list l;
    const char nul[] = "a\nb\0c\n";
    assert_int_equal(qn_hostfile_parse(nul, sizeof nul - 1, "h", &l), QN_ERR_FORMAT);
    assert_string_equal(qn_last_error(), "h:2: NUL byte in the line");
    assert_null(l.hosts);
    /* 255 characters are a name, 256 are not */
    char name[300];
    memset(name, 'h', 255);
    strcpy(name + 255, "\n");
    assert_int_equal(parse_hf(name, &l), QN_OK);
    assert_int_equal(strlen(l.hosts[0].name), 255);
    qn_host_list_free(&l);
    memset(name, 'h', 256);
    strcpy(name + 256, "\n");
    assert_hf_error(name, QN_ERR_FORMAT, "hosts.txt:1: host name longer than 255");
    /* an earlier good line does not survive a later bad one */
    assert_hf_error("a\nb\nc slots=x\n", QN_ERR_FORMAT, "hosts.txt:3:");
    /* no path given */
    assert_int_equal(qn_hostfile_parse("a slots=x", 9, NULL, &l), QN_ERR_FORMAT);
    assert_non_null(strstr(qn_last_error(), "hostfile:1:"));
}

/* Many hosts: repeats found across index growth, the host cap exact. */
static void test_hostfile_many(void **state) {
    (void)state;
    size_t n = QN_HOSTS_MAX + 1, len = 0;
    char *text = malloc(n * 16 + 1);
    assert_non_null(text);
    /* 3000 hosts, then every third named again: slots 2, 1, 1, 2, ... */
    for (size_t i = 0; i < 3000; i++) len += (size_t)sprintf(text + len, "h%zu\n", i);
    for (size_t i = 0; i < 3000; i += 3) len += (size_t)sprintf(text + len, "h%zu\n", i);
    qn_host_list l;
    assert_int_equal(qn_hostfile_parse(text, len, "many", &l), QN_OK);
    assert_int_equal(l.n, 3000);
    char want[32];
    for (size_t i = 0; i < l.n; i++) {
        snprintf(want, sizeof want, "h%zu", i);
        assert_string_equal(l.hosts[i].name, want);
        assert_int_equal(l.hosts[i].slots, i % 3 == 0 ? 2 : 1);
    }
    assert_int_equal(qn_host_list_total_slots(&l), 4000);
    qn_host_list_free(&l);
    /* exactly the cap, then one more */
    len = 0;
    for (size_t i = 0; i < n - 1; i++) len += (size_t)sprintf(text + len, "n%zu\n", i);
    assert_int_equal(qn_hostfile_parse(text, len, "many", &l), QN_OK);
    assert_int_equal(l.n, QN_HOSTS_MAX);
    qn_host_list_free(&l);
    len += (size_t)sprintf(text + len, "n%zu\n", n - 1);
    assert_int_equal(qn_hostfile_parse(text, len, "many", &l), QN_ERR_TOO_LARGE);
    assert_string_equal(qn_last_error(), "many:65537: more than 65536 hosts");
    assert_null(l.hosts);
    free(text);
}

/* ---- Slurm node lists -------------------------------------------------- */

static void test_nodelist_expand(void **state) {
    (void)state;
    assert_nl("node01", "node01");
    assert_nl("node[01-03,07]", "node01 node02 node03 node07");
    assert_nl("gpu[1-2],cpu5", "gpu1 gpu2 cpu5");
    assert_nl("n[008-010]", "n008 n009 n010");
    assert_nl("n[8-10]", "n8 n9 n10");
    assert_nl("n[098-101]", "n098 n099 n100 n101");
    assert_nl("n[0]", "n0");
    assert_nl("n[7,3]", "n7 n3"); /* listed order, not sorted */
    assert_nl("rack[1-2]-n[1-2]", "rack1-n1 rack1-n2 rack2-n1 rack2-n2");
    assert_nl("x[1-2]y[1-3]z", "x1y1z x1y2z x1y3z x2y1z x2y2z x2y3z");
    assert_nl("[1-2]x", "1x 2x");
    assert_nl("a[1-2].ib,b_c,d[9]-e", "a1.ib a2.ib b_c d9-e");
    assert_nl("10.0.0.1,10.0.0.2", "10.0.0.1 10.0.0.2");
    assert_nl("r[01-02]n[1,3-4]", "r01n1 r01n3 r01n4 r02n1 r02n3 r02n4");
}

static void test_nodelist_errors(void **state) {
    (void)state;
    assert_nl_error("", QN_ERR_FORMAT, "empty");
    assert_nl_error(",", QN_ERR_FORMAT, "empty name");
    assert_nl_error("a,,b", QN_ERR_FORMAT, "empty name");
    assert_nl_error("a,", QN_ERR_FORMAT, "empty name");
    assert_nl_error(",a", QN_ERR_FORMAT, "empty name");
    assert_nl_error("n[1-3", QN_ERR_FORMAT, "'n[1-3': '[' without ']'");
    assert_nl_error("n1-3]", QN_ERR_FORMAT, "']' without '['");
    assert_nl_error("n[1-2]]", QN_ERR_FORMAT, "']' without '['");
    assert_nl_error("n[[1]]", QN_ERR_FORMAT, "nested '['");
    assert_nl_error("n[1,[2]]", QN_ERR_FORMAT, "nested '['");
    assert_nl_error("n[]", QN_ERR_FORMAT, "empty brackets");
    assert_nl_error("n[3-1]", QN_ERR_FORMAT, "range 3-1 is reversed");
    assert_nl_error("n[-3]", QN_ERR_FORMAT, "empty range");
    assert_nl_error("n[1-]", QN_ERR_FORMAT, "empty range");
    assert_nl_error("n[1,,2]", QN_ERR_FORMAT, "empty range");
    assert_nl_error("n[1,]", QN_ERR_FORMAT, "empty range");
    assert_nl_error("n[a-b]", QN_ERR_FORMAT, "range 'a-b'");
    assert_nl_error("n[1-2-3]", QN_ERR_FORMAT, "range '1-2-3'");
    assert_nl_error("n[1234567890]", QN_ERR_FORMAT, "at most 9 digits");
    assert_nl_error("a b", QN_ERR_FORMAT, "character 0x20");
    assert_nl_error("a;b", QN_ERR_FORMAT, "character 0x3b");
    assert_nl_error("a@b", QN_ERR_FORMAT, "character 0x40");
    assert_nl_error("-n[1-2]", QN_ERR_FORMAT, "may not start with '-'");
    assert_nl_error("a,a", QN_ERR_FORMAT, "host 'a' is listed twice");
    assert_nl_error("n[1-3],n2", QN_ERR_FORMAT, "host 'n2' is listed twice");
    assert_nl_error("n[1,1]", QN_ERR_FORMAT, "host 'n1' is listed twice");
    /* the cap: checked on counts before any name is built */
    assert_nl_error("n[0-65536]", QN_ERR_TOO_LARGE, "more than 65536 names");
    assert_nl_error("n[1-999999999]", QN_ERR_TOO_LARGE, "more than 65536 names");
    assert_nl_error("a[0-255]b[0-256]", QN_ERR_TOO_LARGE, "more than 65536 names");
    assert_nl_error("a[1-40000],b[1-40000]", QN_ERR_TOO_LARGE, "more than 65536 names");
    assert_nl_error("a[1-65536],b", QN_ERR_TOO_LARGE, "more than 65536 names");
    /* names too long: literal, and by expansion */
    char big[400];
    memset(big, 'h', 256);
    big[256] = '\0';
    assert_nl_error(big, QN_ERR_FORMAT, "longer than 255");
    memset(big, 'h', 250);
    strcpy(big + 250, "[100000-100001]");
    assert_nl_error(big, QN_ERR_FORMAT, "longer than 255");
    big[255] = '\0'; /* 250 h's and "[100" : unbalanced */
    assert_nl_error(big, QN_ERR_FORMAT, "'[' without ']'");
    memset(big, 'h', 255);
    big[255] = '\0';
    assert_nl(big, big);
}

static void test_nodelist_at_cap(void **state) {
    (void)state;
    qn_host_list l;
    assert_int_equal(qn_slurm_nodelist_expand("n[1-65536]", &l), QN_OK);
    assert_int_equal(l.n, QN_HOSTS_MAX);
    char want[32];
    for (size_t i = 0; i < l.n; i++) {
        snprintf(want, sizeof want, "n%zu", i + 1);
        assert_string_equal(l.hosts[i].name, want);
    }
    qn_host_list_free(&l);
    /* 256 x 256 = the cap exactly, zero padding in both groups */
    assert_int_equal(qn_slurm_nodelist_expand("r[000-255]n[000-255]", &l), QN_OK);
    assert_int_equal(l.n, 65536);
    for (size_t i = 0; i < l.n; i += 257) {
        snprintf(want, sizeof want, "r%03zun%03zu", i / 256, i % 256);
        assert_string_equal(l.hosts[i].name, want);
    }
    qn_host_list_free(&l);
}

/* ---- SLURM_TASKS_PER_NODE ---------------------------------------------- */

static void assert_tasks(const char *spec, const uint32_t *want, size_t n_want) {
    uint32_t *c = NULL;
    size_t n = 0;
    qn_status st = qn_slurm_tasks_per_node(spec, &c, &n);
    if (st != QN_OK) fail_msg("'%s': %s", spec, qn_last_error());
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) assert_int_equal(c[i], want[i]);
    free(c);
}

static void assert_tasks_error(const char *spec, qn_status st, const char *needle) {
    uint32_t *c = (uint32_t *)&c;
    size_t n = 99;
    qn_status got = qn_slurm_tasks_per_node(spec, &c, &n);
    if (got != st || !strstr(qn_last_error(), needle))
        fail_msg("'%s': got %s '%s', want %s containing '%s'", spec, qn_status_name(got),
                 qn_last_error(), qn_status_name(st), needle);
    assert_null(c);
    assert_int_equal(n, 0);
}

static void test_tasks_per_node(void **state) {
    (void)state;
    assert_tasks("2(x3),1", (const uint32_t[]){2, 2, 2, 1}, 4);
    assert_tasks("8", (const uint32_t[]){8}, 1);
    assert_tasks("4(x2)", (const uint32_t[]){4, 4}, 2);
    assert_tasks("1,2,3", (const uint32_t[]){1, 2, 3}, 3);
    assert_tasks("0(x1),5(x2)", (const uint32_t[]){0, 5, 5}, 3);
    assert_tasks_error("", QN_ERR_FORMAT, "empty");
    assert_tasks_error("a", QN_ERR_FORMAT, "expected a task count");
    assert_tasks_error("2,", QN_ERR_FORMAT, "expected a task count");
    assert_tasks_error(",2", QN_ERR_FORMAT, "expected a task count");
    assert_tasks_error("2(x0)", QN_ERR_FORMAT, "expected (xR)");
    assert_tasks_error("2(3)", QN_ERR_FORMAT, "expected (xR)");
    assert_tasks_error("2(x3", QN_ERR_FORMAT, "expected (xR)");
    assert_tasks_error("2(x)", QN_ERR_FORMAT, "expected (xR)");
    assert_tasks_error("2(x3)1", QN_ERR_FORMAT, "expected ',' or the end");
    assert_tasks_error("2 ,1", QN_ERR_FORMAT, "expected ',' or the end");
    assert_tasks_error("65537", QN_ERR_FORMAT, "expected a task count");
    assert_tasks_error("1(x65537)", QN_ERR_FORMAT, "expected (xR)");
    assert_tasks_error("1(x40000),1(x40000)", QN_ERR_TOO_LARGE, "more than 65536 nodes");
    uint32_t *c;
    size_t n;
    assert_int_equal(qn_slurm_tasks_per_node("1(x65536)", &c, &n), QN_OK);
    assert_int_equal(n, 65536);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostfile_basic),   cmocka_unit_test(test_hostfile_line_ends),
        cmocka_unit_test(test_hostfile_repeats), cmocka_unit_test(test_hostfile_errors),
        cmocka_unit_test(test_hostfile_many),
        cmocka_unit_test(test_nodelist_expand),  cmocka_unit_test(test_nodelist_errors),
        cmocka_unit_test(test_nodelist_at_cap),  cmocka_unit_test(test_tasks_per_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
