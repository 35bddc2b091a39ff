/* fuzz_hf_config.c — libFuzzer target for the config.json parser
 * (core/io/hf_config.h). Any input must be accepted or refused without a
 * crash, leak or sanitizer report; an accepted one must dump to JSON that
 * parses back to the same config. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/io/hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qn_model_config c;
    if (qn_hf_config_parse((const char *)data, size, "<fuzz>", &c) != QN_OK) return 0;
    (void)qn_model_config_mlp_kind(&c, 0);
    (void)qn_model_config_n_moe_layers(&c);
    char *text = qn_model_config_to_json(&c);
    if (!text) abort();
    qn_model_config back;
    if (qn_hf_config_parse(text, strlen(text), "<dump>", &back) != QN_OK) abort();
    if (memcmp(&c, &back, sizeof c) != 0) abort();
    free(text);
    return 0;
}
