/*
 * config.h — configuration from environment variables (12-factor).
 *
 * Every getter takes the variable's name and a default that works on one
 * machine. A service-specific variable overrides the shared one: with the
 * service named "orders", ag_config_str("AGORA_DB", ...) reads AGORA_ORDERS_DB
 * first, then AGORA_DB. A value that does not parse is an error that names
 * the variable, the expected form and the value given, e.g.
 *   PORT: expected an integer between 1 and 65535, got "80a"
 * and the getter returns AG_ECONFIG leaving *out unchanged. When the
 * service-specific variable held the bad value, the message names it.
 */
#ifndef AGORA_CONFIG_H
#define AGORA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/error.h"

/* Sets the service name used for overrides (copied). Call once at start. */
void ag_config_set_service(const char *service);

/* The raw value, after the override lookup, or NULL when unset or empty.
 * The string belongs to the environment; copy it if you keep it. */
const char *ag_config_raw(const char *name);

/* Writes the error message of the last failed getter of this thread. */
const char *ag_config_last_error(void);

/* A string: `*out` points into the environment or at `def`. */
int ag_config_str(const char *name, const char *def, const char **out);
int ag_config_int(const char *name, long long def, long long min, long long max, long long *out);
/* true/false, yes/no, on/off, 1/0. */
int ag_config_bool(const char *name, bool def, bool *out);
/* Durations: "250ms", "5s", "2m", "1h"; a bare number is milliseconds. */
int ag_config_duration_ms(const char *name, uint64_t def, uint64_t *out);
/* Sizes: "512", "64k"/"64KiB", "1m"/"1MiB", "1g"/"1GiB". */
int ag_config_size(const char *name, size_t def, size_t *out);

/* Parsers the getters use, exposed for tests and other sources. */
int ag_parse_duration_ms(const char *s, uint64_t *out);
int ag_parse_size(const char *s, size_t *out);

#endif
