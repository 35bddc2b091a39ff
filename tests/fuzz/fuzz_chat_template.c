/* fuzz_chat_template.c — libFuzzer target for the chat templates
 * (qn_chat_render): the input is a JSON document, a list of messages or an
 * object with "messages" and "tools"; it is rendered with every template
 * and thinking setting. Must not crash; a rendered text's length must match. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *doc = cJSON_ParseWithLength((const char *)data, size);
    if (!doc) return 0;
    const cJSON *msgs = doc, *tools = NULL;
    if (cJSON_IsObject(doc)) {
        msgs = cJSON_GetObjectItemCaseSensitive(doc, "messages");
        tools = cJSON_GetObjectItemCaseSensitive(doc, "tools");
    }
    static const char *names[] = {"glm45", "chatml", "qwen2.5", "qwen3", "raw"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        qn_chat_template tpl;
        if (qn_chat_template_parse(names[k], &tpl) != QN_OK) abort();
        for (int think = -1; think <= 1; think++) {
            qn_chat_opts o = {.add_generation_prompt = think != 0, .enable_thinking = think,
                              .tools = tools};
            char *text;
            size_t len;
            if (qn_chat_render(&tpl, msgs, &o, &text, &len) == QN_OK) {
                if (strlen(text) > len) abort();
                free(text);
            }
        }
    }
    cJSON_Delete(doc);
    return 0;
}
