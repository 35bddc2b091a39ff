/* stop_signal.c — the stop flag of buffer, eval and train (contract in
 * cli/stop_signal.h). */
#include "cli/stop_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

void qn_stop_signal_catch(void) {
    g_stop = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

bool qn_stop_signal_seen(void) {
    return g_stop != 0;
}
