/* agora.h — everything of libagora in one include. */
#ifndef AGORA_AGORA_H
#define AGORA_AGORA_H

#include "agora/error.h"
#include "agora/mem.h"
#include "agora/log.h"
#include "agora/config.h"
#include "agora/clock.h"
#include "agora/id.h"
#include "agora/loop.h"
#include "agora/pool.h"
#include "agora/metrics.h"
#include "agora/http.h"
#include "agora/http_client.h"
#include "agora/json.h"
#include "agora/service.h"
#include "agora/auth.h"
#include "agora/store.h"
#include "agora/bus.h"
#include "agora/resilience.h"

#endif
