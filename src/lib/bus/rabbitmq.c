/*
 * rabbitmq.c — the RabbitMQ adapter is being written; until it lands, an
 * amqp:// bus URL is refused at every connection attempt with this error.
 */
#include "agora/log.h"
#include "internal.h"

static int r_open(const char *url, const char *service, ag__bus_role role,
                  const char *const *patterns, int npatterns, uint64_t max_deliveries, void **state)
{
    ag_error("the RabbitMQ adapter is not in this build yet; use a nats:// AGORA_BUS",
             AG_FS("url", url));
    return AG_EUNAVAIL;
}

const ag__bus_adapter ag__bus_rabbitmq = {.name = "rabbitmq", .open = r_open};
