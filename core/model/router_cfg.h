/* router_cfg.h — the MoE router settings of one layer, as core/ops/cpu's router
 * wants them; shared by the training forward (forward.c) and the generation
 * forward (infer.c) so the two route identically. */
#ifndef QN_CORE_MODEL_ROUTER_CFG_H
#define QN_CORE_MODEL_ROUTER_CFG_H

#include "core/model/model.h"
#include "core/ops/cpu/ops.h"

qn_router_cfg qn_model_router_cfg(const qn_model_desc *d, const qn_layer_params *p);

#endif
