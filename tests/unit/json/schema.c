/* Unit tests of src/lib/json/schema.c (ag_schema_check): each keyword of the
 * subset it reads, the field paths of nested problems, "$ref"s into the
 * document, oneOf with a discriminating enum, and that a valid body records
 * nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/json.h"

static json_t *obj(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!j) fail_msg("bad test JSON %s: %s", text, err.text);
    return j;
}

/* The document every case checks against: an order-like body. */
static const char *k_doc =
    "{\"components\": {\"schemas\": {"
    "  \"Line\": {\"type\": \"object\", \"additionalProperties\": false,"
    "            \"required\": [\"productId\", \"quantity\"],"
    "            \"properties\": {\"productId\": {\"type\": \"string\", \"minLength\": 1,"
    "                                             \"maxLength\": 8},"
    "                           \"quantity\": {\"type\": \"integer\", \"minimum\": 1,"
    "                                          \"maximum\": 99}}},"
    "  \"Card\": {\"type\": \"object\", \"required\": [\"type\", \"number\"],"
    "            \"properties\": {\"type\": {\"type\": \"string\", \"enum\": [\"card\"]},"
    "                           \"number\": {\"type\": \"string\", \"pattern\": \"^[0-9]{12,19}$\"}}},"
    "  \"Wallet\": {\"type\": \"object\", \"required\": [\"type\", \"walletId\"],"
    "              \"properties\": {\"type\": {\"type\": \"string\", \"enum\": [\"wallet\"]},"
    "                             \"walletId\": {\"type\": \"string\"}}},"
    "  \"Order\": {\"type\": \"object\", \"additionalProperties\": false,"
    "             \"required\": [\"items\", \"method\"],"
    "             \"properties\": {"
    "               \"items\": {\"type\": \"array\", \"minItems\": 1, \"maxItems\": 3,"
    "                           \"items\": {\"$ref\": \"#/components/schemas/Line\"}},"
    "               \"method\": {\"oneOf\": [{\"$ref\": \"#/components/schemas/Card\"},"
    "                                        {\"$ref\": \"#/components/schemas/Wallet\"}]},"
    "               \"note\": {\"type\": \"string\", \"maxLength\": 3, \"nullable\": true},"
    "               \"email\": {\"type\": \"string\", \"format\": \"email\"},"
    "               \"speed\": {\"type\": \"string\", \"enum\": [\"slow\", \"fast\"]},"
    "               \"tip\": {\"type\": \"number\", \"minimum\": 0, \"exclusiveMinimum\": true},"
    "               \"gift\": {\"type\": \"boolean\"}}},"
    "  \"Patch\": {\"type\": \"object\", \"minProperties\": 1, \"maxProperties\": 2,"
    "             \"properties\": {\"delta\": {\"type\": \"integer\", \"not\": {\"enum\": [0]}}}}}}}";

/* The fields of the problems `body` has, comma-separated, in order. */
static void fields_in(const char *ref, const char *body, char *out, size_t n)
{
    json_t *doc = obj(k_doc);
    json_t *schema = json_pack("{s:s}", "$ref", ref);
    json_t *value = obj(body);
    ag_validator v;
    ag_v_init(&v);
    ag_schema_check(&v, doc, schema, value);
    out[0] = '\0';
    size_t i;
    json_t *d;
    json_array_foreach (v.details, i, d) {
        size_t used = strlen(out);
        snprintf(out + used, n - used, "%s%s", i ? "," : "",
                 json_string_value(json_object_get(d, "field")));
        assert_non_null(json_string_value(json_object_get(d, "message")));
    }
    ag_v_release(&v);
    json_decref(value);
    json_decref(schema);
    json_decref(doc);
}

static void fields_of(const char *body, char *out, size_t n)
{
    fields_in("#/components/schemas/Order", body, out, n);
}

#define EXPECT(body, want)                                                                     \
    do {                                                                                       \
        char got[512];                                                                         \
        fields_of(body, got, sizeof got);                                                      \
        if (strcmp(got, want) != 0) fail_msg("%s: fields \"%s\", want \"%s\"", body, got, want); \
    } while (0)

#define OK_ITEMS "\"items\": [{\"productId\": \"p1\", \"quantity\": 2}]"
#define OK_CARD "\"method\": {\"type\": \"card\", \"number\": \"4242424242424242\"}"

static void test_valid_bodies_record_nothing(void **state)
{
    (void)state;
    EXPECT("{" OK_ITEMS ", " OK_CARD "}", "");
    EXPECT("{" OK_ITEMS ", \"method\": {\"type\": \"wallet\", \"walletId\": \"w\"}, "
           "\"note\": null, \"email\": \"a@b.co\", \"speed\": \"fast\", \"tip\": 0.5, "
           "\"gift\": false}",
           "");
    /* Lengths are code points: three of them in six bytes. */
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"note\": \"\xc3\xa9\xc3\xa9\xc3\xa9\"}", "");
}

static void test_required_types_and_unknown_fields(void **state)
{
    (void)state;
    EXPECT("{}", "items,method");
    EXPECT("[]", "the body");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"extra\": 1}", "extra");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"gift\": \"yes\"}", "gift");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"email\": null}", "email"); /* not nullable */
    EXPECT("{\"items\": \"x\", " OK_CARD "}", "items");
}

static void test_bounds(void **state)
{
    (void)state;
    EXPECT("{\"items\": [], " OK_CARD "}", "items");
    EXPECT("{\"items\": [{\"productId\": \"p\", \"quantity\": 1}, {\"productId\": \"p\", "
           "\"quantity\": 1}, {\"productId\": \"p\", \"quantity\": 1}, {\"productId\": \"p\", "
           "\"quantity\": 1}], " OK_CARD "}",
           "items");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"note\": \"four\"}", "note");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"tip\": 0}", "tip"); /* exclusive */
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"speed\": \"warp\"}", "speed");
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"email\": \"nobody\"}", "email");
}

static void test_nested_paths(void **state)
{
    (void)state;
    EXPECT("{\"items\": [{\"productId\": \"p1\", \"quantity\": 0}, {\"quantity\": 1.5, "
           "\"x\": 1}], " OK_CARD "}",
           "items[0].quantity,items[1].productId,items[1].quantity,items[1].x");
    EXPECT("{\"items\": [{\"productId\": \"much-too-long\", \"quantity\": 100}], " OK_CARD "}",
           "items[0].productId,items[0].quantity");
}

static void test_one_of_reports_the_named_form(void **state)
{
    (void)state;
    /* type names the card form: its own problems, not "matches none". */
    EXPECT("{" OK_ITEMS ", \"method\": {\"type\": \"card\", \"number\": \"12ab\"}}",
           "method.number");
    EXPECT("{" OK_ITEMS ", \"method\": {\"type\": \"wallet\"}}", "method.walletId");
    EXPECT("{" OK_ITEMS ", \"method\": {\"type\": \"cash\"}}", "method");
}

static void test_nul_and_broken_refs(void **state)
{
    (void)state;
    EXPECT("{" OK_ITEMS ", " OK_CARD ", \"note\": \"a\\u0000\"}", "note");
    /* A "$ref" that leads nowhere checks nothing rather than crash. */
    json_t *doc = obj("{}");
    json_t *schema = obj("{\"$ref\": \"#/components/schemas/None\"}");
    json_t *value = obj("{\"a\": 1}");
    ag_validator v;
    ag_v_init(&v);
    ag_schema_check(&v, doc, schema, value);
    assert_true(ag_v_ok(&v));
    ag_v_release(&v);
    json_decref(value);
    json_decref(schema);
    json_decref(doc);
}

static void test_not_and_property_counts(void **state)
{
    (void)state;
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"{\"delta\": 3}", ""},
        {"{\"delta\": 0}", "delta"},
        {"{}", "the body"},
        {"{\"delta\": 1, \"a\": 1, \"b\": 2}", "the body"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char got[256];
        fields_in("#/components/schemas/Patch", cases[i].body, got, sizeof got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s: fields \"%s\", want \"%s\"", cases[i].body, got, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_bodies_record_nothing),
        cmocka_unit_test(test_required_types_and_unknown_fields),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_nested_paths),
        cmocka_unit_test(test_one_of_reports_the_named_form),
        cmocka_unit_test(test_nul_and_broken_refs),
        cmocka_unit_test(test_not_and_property_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
