/* qn_testplug_future.c — test plugin exporting only a table for an ABI
 * version newer than this quench knows: loading must fail with a version
 * error, not crash. */
const char qn_reward_plugin_v7[16] = "from the future";
