/*
 * openapi.c — the OpenAPI 3 description of agora-notifications' routes,
 * served at /openapi.json. Keep it in step with nt_routes() in routes.c; the
 * integration test checks that every route is described. The push
 * protocols themselves are in README.md.
 */
#include "notifications.h"

/* clang-format off */
const char nt_openapi_json[] =
    "{\"openapi\": \"3.0.3\",\n"
    " \"info\": {\"title\": \"agora-notifications\", \"version\": \"1.0.0\",\n"
    "  \"description\": \"Notifications per user from the shop's events; push over WebSocket (/v1/ws) and Server-Sent Events (/v1/stream) with resume from the last seen id; e-mail to a Maildir or SMTP. Every route needs a bearer token from agora-users.\"},\n"
    " \"servers\": [{\"url\": \"http://127.0.0.1:7006\"}],\n"
    " \"security\": [{\"bearer\": []}],\n"
    " \"components\": {\"schemas\": {\n"
    "   \"Notification\": {\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\", \"description\": \"a decimal integer; ids only grow\"}, \"type\": {\"type\": \"string\", \"example\": \"order.confirmed\"}, \"title\": {\"type\": \"string\"}, \"message\": {\"type\": \"string\"}, \"data\": {\"type\": \"object\"}, \"read\": {\"type\": \"boolean\"}, \"createdAt\": {\"type\": \"string\", \"format\": \"date-time\"}}}\n"
    "  }},\n"
    " \"paths\": {\n"
    "  \"/v1/notifications\": {\"get\": {\"summary\": \"The caller's notifications, newest first, paginated, with unreadCount\", \"parameters\": [{\"name\": \"page\", \"in\": \"query\", \"schema\": {\"type\": \"integer\", \"minimum\": 1}}, {\"name\": \"limit\", \"in\": \"query\", \"schema\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 100}}, {\"name\": \"unread\", \"in\": \"query\", \"schema\": {\"type\": \"boolean\"}}], \"responses\": {\"200\": {\"description\": \"{success, data: [Notification], pagination, unreadCount, unread}\"}, \"401\": {\"description\": \"no token\"}, \"422\": {\"description\": \"VALIDATION_FAILED\"}}}},\n"
    "  \"/v1/notifications/read\": {\"post\": {\"summary\": \"Mark the caller's notifications read, by ids or all\", \"requestBody\": {\"required\": true, \"content\": {\"application/json\": {\"schema\": {\"type\": \"object\", \"properties\": {\"ids\": {\"type\": \"array\", \"maxItems\": 1000, \"items\": {\"type\": \"string\"}}, \"all\": {\"type\": \"boolean\", \"enum\": [true]}}}}}}, \"responses\": {\"200\": {\"description\": \"{marked, unreadCount}\"}, \"401\": {\"description\": \"no token\"}, \"422\": {\"description\": \"VALIDATION_FAILED\"}}}},\n"
    "  \"/v1/ws\": {\"get\": {\"summary\": \"WebSocket push (RFC 6455). Token in Authorization (or ?access_token=) at the upgrade, or as the first message {type: auth, token}; ?since=<id> resumes\", \"parameters\": [{\"name\": \"since\", \"in\": \"query\", \"schema\": {\"type\": \"string\"}}], \"responses\": {\"101\": {\"description\": \"switching to WebSocket\"}, \"400\": {\"description\": \"BAD_UPGRADE\"}, \"401\": {\"description\": \"a bad token at the upgrade\"}, \"426\": {\"description\": \"UPGRADE_REQUIRED\"}}}},\n"
    "  \"/v1/stream\": {\"get\": {\"summary\": \"Server-Sent Events push; Last-Event-ID or ?since=<id> resumes\", \"parameters\": [{\"name\": \"since\", \"in\": \"query\", \"schema\": {\"type\": \"string\"}}, {\"name\": \"Last-Event-ID\", \"in\": \"header\", \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"text/event-stream: events ready and notification, comments as heartbeats\"}, \"401\": {\"description\": \"no or a bad token\"}, \"429\": {\"description\": \"TOO_MANY_CONNECTIONS\"}}}},\n"
    "  \"/v1/presence\": {\"get\": {\"summary\": \"Whether each user is online now (online while they have a WebSocket or SSE connection open)\", \"parameters\": [{\"name\": \"userIds\", \"in\": \"query\", \"required\": true, \"description\": \"1-100 user ids, comma-separated\", \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"[{userId, status: online|offline, changedAt}]\"}, \"401\": {\"description\": \"no token\"}, \"422\": {\"description\": \"VALIDATION_FAILED (no ids, more than 100, a bad id)\"}}}}\n"
    " }}\n";
/* clang-format on */
