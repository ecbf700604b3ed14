/* events.c — what agora-users publishes (docs/events.md: user.*). */
#include "users.h"

int publish_user_event(ag_db *db, const char *type, const user_row *u)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:s}", "userId", u->id, "username", u->username,
                             "email", u->email, "role", u->role);
    return ag_bus_publish(g_users.bus, db, type, u->id, data, NULL);
}
