/*
 * openapi.c — the OpenAPI 3 description of agora-inventory's routes, served
 * at /openapi.json. Keep it in step with inventory_routes() in routes.c; the
 * integration test checks that every route is described.
 */
#include "inventory.h"

/* clang-format off */
const char inventory_openapi_json[] =
    "{\"openapi\": \"3.0.3\",\n"
    " \"info\": {\"title\": \"agora-inventory\", \"version\": \"1.0.0\",\n"
    "  \"description\": \"Stock per product, reservations per order (RESERVED -> COMMITTED | RELEASED; FAILED), low-stock alerts. Every route needs a bearer token from agora-users.\"},\n"
    " \"servers\": [{\"url\": \"http://127.0.0.1:7004\"}],\n"
    " \"security\": [{\"bearer\": []}],\n"
    " \"components\": {\"securitySchemes\": {\"bearer\": {\"type\": \"http\", \"scheme\": \"bearer\", \"bearerFormat\": \"JWT\"}},\n"
    "  \"schemas\": {\n"
    "   \"Stock\": {\"type\": \"object\", \"properties\": {\"productId\": {\"type\": \"string\"}, \"quantity\": {\"type\": \"integer\"}, \"reserved\": {\"type\": \"integer\"}, \"available\": {\"type\": \"integer\"}, \"lowStockLevel\": {\"type\": \"integer\"}, \"location\": {\"type\": \"string\"}, \"deleted\": {\"type\": \"boolean\"}, \"updatedAt\": {\"type\": \"string\", \"format\": \"date-time\"}}},\n"
    "   \"Item\": {\"type\": \"object\", \"required\": [\"productId\", \"quantity\"], \"properties\": {\"productId\": {\"type\": \"string\"}, \"quantity\": {\"type\": \"integer\", \"minimum\": 1}}},\n"
    "   \"Reservation\": {\"type\": \"object\", \"properties\": {\"orderId\": {\"type\": \"string\"}, \"state\": {\"type\": \"string\", \"enum\": [\"RESERVED\", \"COMMITTED\", \"RELEASED\", \"RETURNED\", \"FAILED\"]}, \"items\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/Item\"}}, \"createdAt\": {\"type\": \"string\"}, \"updatedAt\": {\"type\": \"string\"}}}\n"
    "  }},\n"
    " \"paths\": {\n"
    "  \"/v1/inventory\": {\"get\": {\"summary\": \"All stock rows (admin), paginated\", \"parameters\": [{\"name\": \"page\", \"in\": \"query\", \"schema\": {\"type\": \"integer\"}}, {\"name\": \"limit\", \"in\": \"query\", \"schema\": {\"type\": \"integer\", \"maximum\": 100}}], \"responses\": {\"200\": {\"description\": \"a page of Stock\"}, \"401\": {\"description\": \"no token\"}, \"403\": {\"description\": \"not an admin\"}}}},\n"
    "  \"/v1/inventory/{productId}\": {\"get\": {\"summary\": \"One product's stock\", \"parameters\": [{\"name\": \"productId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"Stock\"}, \"404\": {\"description\": \"unknown product\"}}}},\n"
    "  \"/v1/inventory/{productId}/adjust\": {\"post\": {\"summary\": \"Add or remove stock (admin)\", \"parameters\": [{\"name\": \"productId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"requestBody\": {\"required\": true, \"content\": {\"application/json\": {\"schema\": {\"type\": \"object\", \"required\": [\"delta\", \"reason\"], \"properties\": {\"delta\": {\"type\": \"integer\", \"not\": {\"enum\": [0]}}, \"reason\": {\"type\": \"string\"}, \"lowStockLevel\": {\"type\": \"integer\"}, \"location\": {\"type\": \"string\"}}}}}}, \"responses\": {\"200\": {\"description\": \"Stock\"}, \"201\": {\"description\": \"Stock, row created\"}, \"409\": {\"description\": \"INSUFFICIENT_STOCK\"}, \"422\": {\"description\": \"VALIDATION_FAILED\"}}}},\n"
    "  \"/v1/reservations\": {\"post\": {\"summary\": \"Reserve every item or none (service or admin); idempotent by orderId\", \"requestBody\": {\"required\": true, \"content\": {\"application/json\": {\"schema\": {\"type\": \"object\", \"required\": [\"orderId\", \"items\"], \"properties\": {\"orderId\": {\"type\": \"string\"}, \"items\": {\"type\": \"array\", \"items\": {\"$ref\": \"#/components/schemas/Item\"}}}}}}}, \"responses\": {\"201\": {\"description\": \"Reservation\"}, \"409\": {\"description\": \"INSUFFICIENT_STOCK (details: productId, requested, available) or IDEMPOTENCY_CONFLICT\"}, \"422\": {\"description\": \"VALIDATION_FAILED\"}}}},\n"
    "  \"/v1/reservations/{orderId}\": {\"get\": {\"summary\": \"A reservation (service or admin)\", \"parameters\": [{\"name\": \"orderId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"Reservation\"}, \"404\": {\"description\": \"unknown\"}}}},\n"
    "  \"/v1/reservations/{orderId}/commit\": {\"post\": {\"summary\": \"Take the reserved units out of stock; idempotent\", \"parameters\": [{\"name\": \"orderId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"Reservation\"}, \"404\": {\"description\": \"unknown\"}, \"409\": {\"description\": \"INVALID_STATE (released or failed)\"}}}},\n"
    "  \"/v1/reservations/{orderId}/release\": {\"post\": {\"summary\": \"Give the reserved units back; idempotent\", \"parameters\": [{\"name\": \"orderId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"Reservation\"}, \"404\": {\"description\": \"unknown\"}, \"409\": {\"description\": \"INVALID_STATE (committed or failed)\"}}}},\n"
    "  \"/v1/reservations/{orderId}/return\": {\"post\": {\"summary\": \"Put a committed reservation's units back into stock (an order cancelled before shipping); idempotent\", \"parameters\": [{\"name\": \"orderId\", \"in\": \"path\", \"required\": true, \"schema\": {\"type\": \"string\"}}], \"responses\": {\"200\": {\"description\": \"Reservation\"}, \"404\": {\"description\": \"unknown\"}, \"409\": {\"description\": \"INVALID_STATE (not committed)\"}}}}\n"
    " }}\n";
/* clang-format on */
