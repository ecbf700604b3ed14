/*
 * banned.h — functions Agora's code must not call.
 *
 * Each is easy to misuse with unbounded input (strcpy, sprintf, gets...) or
 * not thread-safe (strtok, localtime...). Use snprintf, memcpy with a checked
 * length, ag_buf, strtok_r, gmtime_r instead.
 *
 * The build force-includes this file into every Agora source (-include), so
 * it first includes the libc headers that declare the banned functions: their
 * include guards then keep the macros below from rewriting a declaration when
 * a source includes them again.
 */
#ifndef AGORA_BANNED_H
#define AGORA_BANNED_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AG_BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) AG_BANNED(strcpy)
#undef strcat
#define strcat(x, y) AG_BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) AG_BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) AG_BANNED(strncat)
#undef sprintf
#define sprintf(...) AG_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) AG_BANNED(vsprintf)
#undef gets
#define gets(x) AG_BANNED(gets)
#undef strtok
#define strtok(x, y) AG_BANNED(strtok)
#undef gmtime
#define gmtime(t) AG_BANNED(gmtime)
#undef localtime
#define localtime(t) AG_BANNED(localtime)
#undef ctime
#define ctime(t) AG_BANNED(ctime)
#undef asctime
#define asctime(t) AG_BANNED(asctime)
#undef atoi
#define atoi(x) AG_BANNED(atoi)
#undef atol
#define atol(x) AG_BANNED(atol)

#endif
