/* stop_signal.h — SIGTERM and SIGINT as a request to stop, for the
 * long-running processes that finish their current step first (`quench
 * buffer`, `quench eval`, `quench train`): the handler only sets a flag that
 * their loops look at between steps.
 *
 * Leaves out: a second signal forcing an exit (`quench rollout` drains and
 * has its own handler for that), and other signals. */
#ifndef QN_CLI_STOP_SIGNAL_H
#define QN_CLI_STOP_SIGNAL_H

#include <stdbool.h>

/* Clears the flag and installs the handler for SIGTERM and SIGINT, without
 * SA_RESTART: a blocking call the signal interrupts returns EINTR, so the
 * loop gets to look at the flag. */
void qn_stop_signal_catch(void);

/* Whether SIGTERM or SIGINT came since qn_stop_signal_catch. */
bool qn_stop_signal_seen(void);

#endif
