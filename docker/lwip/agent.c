/*
 * synfin agent for lwIP (Debian's liblwip, unix port): speaks docs/agent-protocol.md over a unix
 * socket (--unix PATH) or stdin/stdout, and drives lwIP's own socket API (lwip_socket, lwip_bind,
 * ...). The stack attaches to the TAP named by SYNFIN_IFACE on `hello`, not before: the harness
 * creates the TAP after the container started. The agent carries its own TAP driver (see below).
 *
 * The agent must never die on a bad request: every request is parsed by a small bounded JSON
 * parser and every failure becomes an ok:false reply.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_tun.h>

#include "lwip/opt.h"
#include "lwip/init.h"
#include "lwip/tcpip.h"
#include "lwip/netif.h"
#include "lwip/sockets.h"
#include "lwip/api.h"
#include "lwip/tcp.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/priv/sockets_priv.h"
#include "netif/etharp.h"
#include "lwip/ethip6.h"

#define STACK "lwip"
#define DEFAULT_TIMEOUT 5.0
#define LOG_LINE_MAX 2000
#define MAX_LINE (16u << 20)
#define MAX_DEPTH 32
#define MAX_SOCKS 4096

/* ------------------------------------------------------------------------------------------ */
/* time and log                                                                                 */

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* One line per event on stderr; long base64 payloads are shortened to their byte count (they are
 * in the pcap already). */
static void log_line(const char *tag, const char *text) {
  size_t n = strlen(text);
  char *out = malloc(n + 64);
  if (!out) return;
  size_t o = 0;
  const char *p = text;
  while (*p) {
    if (strncmp(p, "\"data\":\"", 8) == 0) {
      const char *start = p + 8, *end = strchr(start, '"');
      if (end && end - start > 48) {
        size_t len = (size_t)(end - start), pad = 0;
        if (len && start[len - 1] == '=') pad++;
        if (len > 1 && start[len - 2] == '=') pad++;
        o += (size_t)sprintf(out + o, "\"data\":\"<%zu bytes>\"", len * 3 / 4 - pad);
        p = end + 1;
        continue;
      }
    }
    out[o++] = *p++;
  }
  out[o] = 0;
  char trunc[64] = "";
  if (o > LOG_LINE_MAX) {
    snprintf(trunc, sizeof trunc, "...(%zu chars)", o);
    out[LOG_LINE_MAX] = 0;
  }
  pthread_mutex_lock(&log_lock);
  fprintf(stderr, "%.6f %s %s%s\n", now_mono(), tag, out, trunc);
  fflush(stderr);
  pthread_mutex_unlock(&log_lock);
  free(out);
}

static void logf_(const char *tag, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  log_line(tag, buf);
}

/* ------------------------------------------------------------------------------------------ */
/* string buffer                                                                                */

typedef struct {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_grow(sbuf *b, size_t extra) {
  if (b->oom) return;
  if (b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *s = realloc(b->s, cap);
  if (!s) { b->oom = 1; return; }
  b->s = s;
  b->cap = cap;
}

static void sb_putn(sbuf *b, const char *s, size_t n) {
  sb_grow(b, n);
  if (b->oom) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  sb_putn(b, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned cp;
  size_t len;
  if (s[0] < 0x80) return 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) { len = 2; cp = s[0] & 0x1f; }
  else if (s[0] >= 0xe0 && s[0] <= 0xef) { len = 3; cp = s[0] & 0x0f; }
  else if (s[0] >= 0xf0 && s[0] <= 0xf4) { len = 4; cp = s[0] & 0x07; }
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return len;
}

/* A JSON string: valid UTF-8 passes through, anything else becomes U+FFFD, so the reply is
 * always valid UTF-8 JSON. */
static void sb_jstr(sbuf *b, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  sb_puts(b, "\"");
  for (size_t i = 0; i < n;) {
    unsigned char c = u[i];
    if (c >= 0x80) {
      size_t k = utf8_len(u + i, n - i);
      if (k) sb_putn(b, s + i, k);
      else sb_puts(b, "\\ufffd");
      i += k ? k : 1;
      continue;
    }
    if (c == '"') sb_puts(b, "\\\"");
    else if (c == '\\') sb_puts(b, "\\\\");
    else if (c == '\n') sb_puts(b, "\\n");
    else if (c == '\r') sb_puts(b, "\\r");
    else if (c == '\t') sb_puts(b, "\\t");
    else if (c < 0x20 || c == 0x7f) sb_printf(b, "\\u%04x", c);
    else sb_putn(b, (const char *)&c, 1);
    i++;
  }
  sb_puts(b, "\"");
}

static void sb_jcstr(sbuf *b, const char *s) { sb_jstr(b, s, strlen(s)); }

/* ------------------------------------------------------------------------------------------ */
/* JSON: a bounded recursive-descent parser into a small tree                                   */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jval {
  jtype t;
  int b;
  double num;
  int is_int;      /* written without fraction/exponent and fits in long long */
  long long i;
  char *s;         /* J_STR: decoded bytes (NUL-terminated, may hold NULs) */
  size_t slen;
  char *key;       /* member name inside an object */
  struct jval *child, *next;
} jval;

static void jfree(jval *v) {
  while (v) {
    jval *next = v->next;
    jfree(v->child);
    free(v->s);
    free(v->key);
    free(v);
    v = next;
  }
}

typedef struct {
  const char *p, *end;
  const char *err;
} jparser;

static void skip_ws(jparser *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static void put_utf8(sbuf *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) { u[0] = (char)cp; n = 1; }
  else if (cp < 0x800) { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
  else if (cp < 0x10000) {
    u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    u[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
  } else {
    u[0] = (char)(0xf0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
  }
  sb_putn(b, u, n);
}

static int parse_string(jparser *ps, char **out, size_t *outlen) {
  sbuf b = {0};
  ps->p++; /* opening quote */
  while (1) {
    if (ps->p >= ps->end) { ps->err = "unterminated string"; goto fail; }
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"') { ps->p++; break; }
    if (c < 0x20) { ps->err = "control character in string"; goto fail; }
    if (c != '\\') { sb_putn(&b, ps->p, 1); ps->p++; continue; }
    ps->p++;
    if (ps->p >= ps->end) { ps->err = "unterminated escape"; goto fail; }
    char e = *ps->p++;
    switch (e) {
      case '"': sb_puts(&b, "\""); break;
      case '\\': sb_puts(&b, "\\"); break;
      case '/': sb_puts(&b, "/"); break;
      case 'b': sb_puts(&b, "\b"); break;
      case 'f': sb_puts(&b, "\f"); break;
      case 'n': sb_puts(&b, "\n"); break;
      case 'r': sb_puts(&b, "\r"); break;
      case 't': sb_puts(&b, "\t"); break;
      case 'u': {
        unsigned cp, lo;
        if (ps->end - ps->p < 4 || hex4(ps->p, &cp)) { ps->err = "bad \\u escape"; goto fail; }
        ps->p += 4;
        if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u'
            && !hex4(ps->p + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          ps->p += 6;
        }
        put_utf8(&b, cp);
        break;
      }
      default: ps->err = "bad escape"; goto fail;
    }
  }
  if (b.oom) { ps->err = "out of memory"; goto fail; }
  if (!b.s) { b.s = calloc(1, 1); if (!b.s) { ps->err = "out of memory"; return -1; } }
  *out = b.s;
  *outlen = b.len;
  return 0;
fail:
  free(b.s);
  return -1;
}

static jval *parse_value(jparser *ps, int depth);

static jval *jnew(jparser *ps, jtype t) {
  jval *v = calloc(1, sizeof *v);
  if (!v) ps->err = "out of memory";
  else v->t = t;
  return v;
}

static jval *parse_number(jparser *ps) {
  const char *start = ps->p, *p = ps->p;
  int integral = 1;
  if (p < ps->end && *p == '-') p++;
  if (p >= ps->end || *p < '0' || *p > '9') { ps->err = "bad number"; return NULL; }
  if (*p == '0') p++;
  else while (p < ps->end && *p >= '0' && *p <= '9') p++;
  if (p < ps->end && *p == '.') {
    integral = 0;
    p++;
    if (p >= ps->end || *p < '0' || *p > '9') { ps->err = "bad number"; return NULL; }
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  if (p < ps->end && (*p == 'e' || *p == 'E')) {
    integral = 0;
    p++;
    if (p < ps->end && (*p == '+' || *p == '-')) p++;
    if (p >= ps->end || *p < '0' || *p > '9') { ps->err = "bad number"; return NULL; }
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  size_t n = (size_t)(p - start);
  if (n > 64) { ps->err = "number too long"; return NULL; }
  char tmp[80];
  memcpy(tmp, start, n);
  tmp[n] = 0;
  jval *v = jnew(ps, J_NUM);
  if (!v) return NULL;
  v->num = strtod(tmp, NULL);
  if (integral) {
    errno = 0;
    long long i = strtoll(tmp, NULL, 10);
    if (errno == 0) { v->is_int = 1; v->i = i; }
  }
  ps->p = p;
  return v;
}

static jval *parse_value(jparser *ps, int depth) {
  if (depth > MAX_DEPTH) { ps->err = "nested too deeply"; return NULL; }
  skip_ws(ps);
  if (ps->p >= ps->end) { ps->err = "unexpected end"; return NULL; }
  char c = *ps->p;
  if (c == '{' || c == '[') {
    int obj = c == '{';
    jval *v = jnew(ps, obj ? J_OBJ : J_ARR), **tail;
    if (!v) return NULL;
    tail = &v->child;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; return v; }
    while (1) {
      char *key = NULL;
      size_t klen = 0;
      if (obj) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') { ps->err = "expected a member name"; jfree(v); return NULL; }
        if (parse_string(ps, &key, &klen)) { jfree(v); return NULL; }
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') { ps->err = "expected ':'"; free(key); jfree(v); return NULL; }
        ps->p++;
      }
      jval *item = parse_value(ps, depth + 1);
      if (!item) { free(key); jfree(v); return NULL; }
      item->key = key;
      *tail = item;
      tail = &item->next;
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
      if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; return v; }
      ps->err = obj ? "expected ',' or '}'" : "expected ',' or ']'";
      jfree(v);
      return NULL;
    }
  }
  if (c == '"') {
    jval *v = jnew(ps, J_STR);
    if (!v) return NULL;
    if (parse_string(ps, &v->s, &v->slen)) { jfree(v); return NULL; }
    return v;
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(ps);
  static const struct { const char *word; jtype t; int b; } words[] = {
    {"true", J_BOOL, 1}, {"false", J_BOOL, 0}, {"null", J_NULL, 0}};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i].word);
    if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i].word, n) == 0) {
      jval *v = jnew(ps, words[i].t);
      if (!v) return NULL;
      v->b = words[i].b;
      ps->p += n;
      return v;
    }
  }
  ps->err = "unexpected character";
  return NULL;
}

static jval *jparse(const char *text, size_t n, const char **err) {
  jparser ps = {text, text + n, NULL};
  jval *v = parse_value(&ps, 0);
  if (v) {
    skip_ws(&ps);
    if (ps.p != ps.end) { jfree(v); v = NULL; ps.err = "trailing characters"; }
  }
  *err = ps.err;
  return v;
}

static jval *jget(const jval *obj, const char *key) {
  if (!obj || obj->t != J_OBJ) return NULL;
  jval *found = NULL;
  for (jval *c = obj->child; c; c = c->next)
    if (c->key && strcmp(c->key, key) == 0) found = c; /* last one wins, as in Python's json */
  return found;
}

static void jwrite(sbuf *b, const jval *v) {
  if (!v) { sb_puts(b, "null"); return; }
  switch (v->t) {
    case J_NULL: sb_puts(b, "null"); break;
    case J_BOOL: sb_puts(b, v->b ? "true" : "false"); break;
    case J_NUM:
      if (v->is_int) sb_printf(b, "%lld", v->i);
      else if (isfinite(v->num)) sb_printf(b, "%.17g", v->num);
      else sb_puts(b, "null");
      break;
    case J_STR: sb_jstr(b, v->s, v->slen); break;
    case J_ARR:
    case J_OBJ:
      sb_puts(b, v->t == J_OBJ ? "{" : "[");
      for (jval *c = v->child; c; c = c->next) {
        if (c != v->child) sb_puts(b, ",");
        if (v->t == J_OBJ) { sb_jcstr(b, c->key ? c->key : ""); sb_puts(b, ":"); }
        jwrite(b, c);
      }
      sb_puts(b, v->t == J_OBJ ? "}" : "]");
      break;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* failures and argument access                                                                 */

typedef struct {
  const char *code; /* protocol errno field: "EBADF", "timeout", "unsupported", ... */
  char msg[300];
} failure;

static int fail(failure *f, const char *code, const char *fmt, ...) {
  va_list ap;
  f->code = code;
  va_start(ap, fmt);
  vsnprintf(f->msg, sizeof f->msg, fmt, ap);
  va_end(ap);
  return -1;
}

static const char *errno_name(int e) {
  switch (e) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(EINTR) E(EIO) E(EBADF) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY)
    E(EEXIST) E(ENODEV) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOSPC) E(EPIPE) E(ERANGE) E(ENOSYS)
    E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE) E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT)
    E(EOPNOTSUPP) E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH)
    E(ENETRESET) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ESHUTDOWN)
    E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS)
#undef E
    default: return "EIO";
  }
}

static int fail_errno(failure *f, const char *call, int e) {
  return fail(f, errno_name(e), "[Errno %d] %s: %s", e, call, strerror(e));
}

static int malformed(failure *f, const char *fmt, const char *name) {
  return fail(f, "EBADMSG", fmt, name);
}

/* Absent or null: *present = 0. Wrong type: EBADMSG. */
static int arg_int(const jval *args, const char *name, long long *out, int *present, failure *f) {
  const jval *v = jget(args, name);
  *present = v && v->t != J_NULL;
  if (!*present) return 0;
  if (v->t != J_NUM || !v->is_int) return malformed(f, "argument '%s' has a bad value", name);
  *out = v->i;
  return 0;
}

static int arg_int_req(const jval *args, const char *name, long long *out, failure *f) {
  int present;
  if (arg_int(args, name, out, &present, f)) return -1;
  if (!present) return malformed(f, "missing argument '%s'", name);
  return 0;
}

static int arg_float(const jval *args, const char *name, double *out, double dflt, failure *f) {
  const jval *v = jget(args, name);
  if (!v || v->t == J_NULL) { *out = dflt; return 0; }
  if (v->t != J_NUM || !isfinite(v->num) || v->num < 0) return malformed(f, "argument '%s' has a bad value", name);
  *out = v->num;
  return 0;
}

static int arg_bool(const jval *args, const char *name, int *out, int dflt, failure *f) {
  const jval *v = jget(args, name);
  if (!v || v->t == J_NULL) { *out = dflt; return 0; }
  if (v->t == J_BOOL) { *out = v->b; return 0; }
  if (v->t == J_NUM && v->is_int) { *out = v->i != 0; return 0; }
  return malformed(f, "argument '%s' has a bad value", name);
}

/* Absent: *out = NULL (an error if required). */
static int arg_str(const jval *args, const char *name, const char **out, int required, failure *f) {
  const jval *v = jget(args, name);
  if (!v || v->t == J_NULL) {
    *out = NULL;
    return required ? malformed(f, "missing argument '%s'", name) : 0;
  }
  if (v->t != J_STR || strlen(v->s) != v->slen) return malformed(f, "argument '%s' has a bad value", name);
  *out = v->s;
  return 0;
}

/* Numeric IPv4 only: names are never resolved, and the lab is IPv4. */
static int arg_addr(const jval *args, const char *name, int required, int *present,
                    struct sockaddr_in *sa, failure *f) {
  const char *s;
  if (arg_str(args, name, &s, required, f)) return -1;
  *present = s != NULL;
  if (!s) return 0;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  if (strchr(s, ':')) return fail(f, "EAFNOSUPPORT", "lwIP target: only IPv4 is used in the lab (%s)", s);
  if (inet_pton(AF_INET, s, &sa->sin_addr) != 1) return fail(f, "EBADMSG", "not a numeric IP address: '%s'", s);
  return 0;
}

static int arg_port(const jval *args, const char *name, int required, int *present, u16_t *port, failure *f) {
  long long v = 0;
  if (arg_int(args, name, &v, present, f)) return -1;
  if (!*present) return required ? malformed(f, "missing argument '%s'", name) : 0;
  if (v < 0 || v > 65535) return malformed(f, "argument '%s' is not a port", name);
  *port = (u16_t)v;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* base64                                                                                       */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(sbuf *b, const unsigned char *d, size_t n) {
  sb_grow(b, (n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
    char q[4] = {B64[v >> 18 & 63], B64[v >> 12 & 63], i + 1 < n ? B64[v >> 6 & 63] : '=', i + 2 < n ? B64[v & 63] : '='};
    sb_putn(b, q, 4);
  }
}

static int b64_val(char c) {
  const char *p = c ? strchr(B64, c) : NULL;
  return p ? (int)(p - B64) : -1;
}

/* Strict (as Python's b64decode(validate=True)): length multiple of 4, padding only at the end. */
static int b64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen) {
  if (n % 4) return -1;
  unsigned char *d = malloc(n / 4 * 3 + 1);
  if (!d) return -1;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4], pad = 0;
    for (int k = 0; k < 4; k++) {
      if (s[i + k] == '=' && i + 4 == n && k >= 2) { v[k] = 0; pad++; continue; }
      if (pad) { free(d); return -1; }
      v[k] = b64_val(s[i + k]);
      if (v[k] < 0) { free(d); return -1; }
    }
    if (pad == 2 && s[i + 2] != '=') { free(d); return -1; }
    unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
    d[o++] = (unsigned char)(w >> 16);
    if (pad < 2) d[o++] = (unsigned char)(w >> 8);
    if (pad < 1) d[o++] = (unsigned char)w;
  }
  *out = d;
  *outlen = o;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the stack                                                                                    */

static struct netif the_netif;
static int stack_up;
static char stack_error[300];
static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t init_cond = PTHREAD_COND_INITIALIZER;
static int init_done;

static void tcpip_ready(void *arg) {
  (void)arg;
  pthread_mutex_lock(&init_lock);
  init_done = 1;
  pthread_cond_signal(&init_cond);
  pthread_mutex_unlock(&init_lock);
}

static int parse_mac(const char *s, u8_t mac[6]) {
  unsigned v[6];
  char tail;
  if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) return -1;
  for (int i = 0; i < 6; i++) mac[i] = (u8_t)v[i];
  return 0;
}

/* The TAP driver. Debian's tapif (netif/tapif.h) is not used: it receives into PBUF_POOL pbufs,
 * and liblwip0 2.1.3+dfsg1-2 allocates those pool elements smaller than pbuf_alloc() fills them
 * (a 616-byte block for a 1054-byte frame: valgrind shows pbuf_take() writing past it), so any
 * frame above ~600 bytes corrupts the heap. Frames here go into exact-size PBUF_RAM pbufs. */
#define FRAME_MAX 1518 /* Ethernet with a VLAN tag, without FCS */
static int tap_fd = -1;

static err_t tap_linkoutput(struct netif *netif, struct pbuf *p) {
  unsigned char buf[FRAME_MAX];
  (void)netif;
  if (p->tot_len > sizeof buf) return ERR_IF;
  u16_t n = pbuf_copy_partial(p, buf, p->tot_len, 0);
  ssize_t w;
  do w = write(tap_fd, buf, n); while (w < 0 && errno == EINTR);
  return w == (ssize_t)n ? ERR_OK : ERR_IF;
}

static u8_t the_mac[6];

static err_t tap_netif_init(struct netif *netif) {
  netif->name[0] = 't';
  netif->name[1] = 'p';
  netif->output = etharp_output;
#if LWIP_IPV6
  netif->output_ip6 = ethip6_output;
#endif
  netif->linkoutput = tap_linkoutput;
  netif->mtu = 1500;
  netif->hwaddr_len = 6;
  memcpy(netif->hwaddr, the_mac, 6);
  netif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_IGMP;
  return ERR_OK;
}

/* A frame is "in hand" from the moment the reader commits to read() it until tcpip_input() has
 * queued it to the tcpip thread; until read() it stays visible in the TAP's queue. */
static pthread_mutex_t tap_lock = PTHREAD_MUTEX_INITIALIZER;
static int tap_in_hand;

static void *tap_reader(void *arg) {
  struct netif *netif = arg;
  unsigned char buf[FRAME_MAX];
  while (1) {
    struct pollfd pfd = {.fd = tap_fd, .events = POLLIN, .revents = 0};
    if (poll(&pfd, 1, -1) < 0) {
      if (errno == EINTR) continue;
      logf_("tap", "poll failed: %s; the stack receives nothing more", strerror(errno));
      return NULL;
    }
    pthread_mutex_lock(&tap_lock);
    tap_in_hand = 1;
    pthread_mutex_unlock(&tap_lock);
    ssize_t n = read(tap_fd, buf, sizeof buf);
    int read_errno = errno;
    if (n >= 14) {
      struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)n, PBUF_RAM);
      if (p) { /* else out of memory: dropped, as a NIC would */
        pbuf_take(p, buf, (u16_t)n);
        if (netif->input(p, netif) != ERR_OK) pbuf_free(p);
      }
    }
    pthread_mutex_lock(&tap_lock);
    tap_in_hand = 0;
    pthread_mutex_unlock(&tap_lock);
    if (n < 0 && read_errno != EINTR && read_errno != EAGAIN) {
      logf_("tap", "read failed: %s; the stack receives nothing more", strerror(read_errno));
      return NULL;
    }
  }
}

static void barrier_done(void *arg) {
  sys_sem_signal((sys_sem_t *)arg);
}

/* A kernel stack has processed a frame by the time the sender's send() returns; here frames pass
 * through the TAP queue, the reader thread and the tcpip thread's mailbox. Before an operation
 * looks at or acts on the stack, let every frame that has already arrived be processed: wait
 * (bounded) until the TAP queue is empty and no frame is in hand, then push a callback through
 * the tcpip mailbox behind them and wait for it. */
static void settle(void) {
  if (!stack_up) return;
  double deadline = now_mono() + 0.05;
  while (now_mono() < deadline) {
    pthread_mutex_lock(&tap_lock);
    struct pollfd pfd = {.fd = tap_fd, .events = POLLIN, .revents = 0};
    int busy = tap_in_hand || poll(&pfd, 1, 0) > 0;
    pthread_mutex_unlock(&tap_lock);
    if (!busy) break;
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  sys_sem_t sem;
  if (sys_sem_new(&sem, 0) != ERR_OK) return;
  /* No timeout: the semaphore must outlive the callback (a stuck tcpip thread is a dead stack). */
  if (tcpip_callback(barrier_done, &sem) == ERR_OK) sys_arch_sem_wait(&sem, 0);
  sys_sem_free(&sem);
}

/* Bring lwIP up on the TAP, once: attach (TUNSETIFF on the TAP the harness made), start the
 * tcpip thread, add the interface with the lab's MAC and address. */
static int stack_start(failure *f) {
  pthread_mutex_lock(&stack_lock);
  if (stack_up) { pthread_mutex_unlock(&stack_lock); return 0; }
  if (stack_error[0]) { pthread_mutex_unlock(&stack_lock); return fail(f, "EIO", "%s", stack_error); }

  const char *iface = getenv("SYNFIN_IFACE"), *mac_s = getenv("SYNFIN_MAC"), *addr_s = getenv("SYNFIN_ADDR");
  char addr[64];
  int prefix = 24;
  ip4_addr_t ip, mask, gw;
  if (!iface || !*iface) iface = "tap0";
  if (parse_mac(mac_s, the_mac)) { pthread_mutex_unlock(&stack_lock); return fail(f, "EINVAL", "SYNFIN_MAC is not a MAC address: %s", mac_s ? mac_s : "(unset)"); }
  if (!addr_s || strlen(addr_s) >= sizeof addr) { pthread_mutex_unlock(&stack_lock); return fail(f, "EINVAL", "SYNFIN_ADDR is unset"); }
  strcpy(addr, addr_s);
  char *slash = strchr(addr, '/');
  if (slash) { *slash = 0; prefix = atoi(slash + 1); }
  if (!ip4addr_aton(addr, &ip) || prefix < 1 || prefix > 32) {
    pthread_mutex_unlock(&stack_lock);
    return fail(f, "EINVAL", "SYNFIN_ADDR is not an IPv4 address/prefix: %s", addr_s);
  }
  ip4_addr_set_u32(&mask, lwip_htonl(prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix)));
  ip4_addr_set_zero(&gw);

  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    pthread_mutex_unlock(&stack_lock);
    return fail(f, errno_name(e), "cannot open /dev/net/tun: %s", strerror(e));
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, iface, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    pthread_mutex_unlock(&stack_lock);
    return fail(f, errno_name(e), "cannot attach to TAP %s: %s", iface, strerror(e));
  }
  tap_fd = fd;

  double t0 = now_mono();
  tcpip_init(tcpip_ready, NULL);
  pthread_mutex_lock(&init_lock);
  while (!init_done) pthread_cond_wait(&init_cond, &init_lock);
  pthread_mutex_unlock(&init_lock);

  LOCK_TCPIP_CORE();
  struct netif *n = netif_add(&the_netif, &ip, &mask, &gw, NULL, tap_netif_init, tcpip_input);
  if (n) {
    netif_set_default(&the_netif);
    netif_set_link_up(&the_netif);
    netif_set_up(&the_netif);
  }
  UNLOCK_TCPIP_CORE();
  pthread_t th;
  if (!n || pthread_create(&th, NULL, tap_reader, &the_netif) != 0) {
    snprintf(stack_error, sizeof stack_error, "cannot bring the interface up on %s", iface);
    pthread_mutex_unlock(&stack_lock);
    return fail(f, "EIO", "%s", stack_error);
  }
  pthread_detach(th);
  stack_up = 1;
  logf_("stack", "lwIP %s up on %s: %s/%d mac %s in %.1f ms", LWIP_VERSION_STRING, iface, addr, prefix,
        mac_s, (now_mono() - t0) * 1e3);
  pthread_mutex_unlock(&stack_lock);
  return 0;
}

static int need_stack(failure *f) {
  if (stack_up) return 0;
  return fail(f, "ENETDOWN", "the stack is not up yet (hello brings it up)");
}

/* ------------------------------------------------------------------------------------------ */
/* sockets                                                                                      */

static pthread_mutex_t socks_lock = PTHREAD_MUTEX_INITIALIZER;
static int sock_fd[MAX_SOCKS]; /* agent handle -> lwIP fd; 0 = free (lwIP fds start at 1) */
static int next_sock = 1;

static int add_sock(int fd, failure *f) {
  pthread_mutex_lock(&socks_lock);
  for (int tries = 0; tries < MAX_SOCKS - 1; tries++) {
    int id = next_sock;
    next_sock = next_sock + 1 >= MAX_SOCKS ? 1 : next_sock + 1;
    if (sock_fd[id] == 0) {
      sock_fd[id] = fd;
      pthread_mutex_unlock(&socks_lock);
      return id;
    }
  }
  pthread_mutex_unlock(&socks_lock);
  lwip_close(fd);
  return fail(f, "EMFILE", "the agent holds too many sockets");
}

static int get_sock(const jval *args, int *fd, failure *f) {
  long long id;
  if (arg_int_req(args, "sock", &id, f)) return -1;
  pthread_mutex_lock(&socks_lock);
  *fd = id > 0 && id < MAX_SOCKS ? sock_fd[id] : 0;
  pthread_mutex_unlock(&socks_lock);
  if (*fd <= 0) return fail(f, "EBADF", "no socket %lld", id);
  return 0;
}

static int take_sock(const jval *args, int *fd, failure *f) {
  long long id;
  if (arg_int_req(args, "sock", &id, f)) return -1;
  pthread_mutex_lock(&socks_lock);
  *fd = id > 0 && id < MAX_SOCKS ? sock_fd[id] : 0;
  if (*fd > 0) sock_fd[id] = 0;
  pthread_mutex_unlock(&socks_lock);
  if (*fd <= 0) return fail(f, "EBADF", "no socket %lld", id);
  return 0;
}

static int set_nonblocking(int fd) {
  int on = 1;
  return lwip_ioctl(fd, (long)FIONBIO, &on);
}

/* Wait for events on one lwIP socket: 1 ready, 0 deadline passed, -1 error (errno set). */
static int wait_fd(int fd, short events, double deadline) {
  while (1) {
    double remaining = deadline - now_mono();
    if (remaining <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int ms = (int)ceil(remaining * 1000.0);
    int rc = lwip_poll(&p, 1, ms);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (rc > 0) {
      if (p.revents & POLLNVAL) { errno = EBADF; return -1; }
      return 1;
    }
  }
}

static void put_addr(sbuf *b, const struct sockaddr_in *sa) {
  char s[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &sa->sin_addr, s, sizeof s);
  sb_puts(b, "[");
  sb_jcstr(b, s);
  sb_printf(b, ",%u]", (unsigned)ntohs(sa->sin_port));
}

static int local_addr(int fd, sbuf *r, failure *f) {
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  if (lwip_getsockname(fd, (struct sockaddr *)&sa, &len) < 0) return fail_errno(f, "getsockname", errno);
  put_addr(r, &sa);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* ops                                                                                          */

static const char *OPS[] = {"accept", "close", "conns", "connect", "getsockopt", "hello", "listen", "quit",
                            "recv", "send", "setsockopt", "shutdown", "start", "state", "sysctl", "tick", "wait"};

static int op_hello(const jval *args, sbuf *r, failure *f) {
  (void)args;
  if (stack_start(f)) return -1;
  sb_puts(r, "{\"stack\":\"" STACK "\",\"version\":\"" LWIP_VERSION_STRING "\",");
  sb_printf(r, "\"pid\":%d,\"ops\":[", (int)getpid());
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) sb_printf(r, "%s\"%s\"", i ? "," : "", OPS[i]);
  sb_puts(r, "]}");
  return 0;
}

static int op_listen(const jval *args, sbuf *r, failure *f) {
  struct sockaddr_in sa;
  int present, reuse;
  u16_t port;
  long long backlog = 16, rcvbuf;
  int has_rcvbuf;
  if (need_stack(f) || arg_addr(args, "addr", 1, &present, &sa, f) || arg_port(args, "port", 1, &present, &port, f))
    return -1;
  if (arg_int(args, "backlog", &backlog, &present, f) || arg_bool(args, "reuseaddr", &reuse, 0, f)
      || arg_int(args, "rcvbuf", &rcvbuf, &has_rcvbuf, f))
    return -1;
  if (!present) backlog = 16;
  if (has_rcvbuf)
    return fail(f, "unsupported", "lwIP's SO_RCVBUF does not size a TCP receive window (fixed TCP_WND)");
  if (backlog < 0) backlog = 0;
  if (backlog > 255) backlog = 255; /* lwIP keeps the backlog in a u8_t */
  sa.sin_port = htons(port);
  int fd = lwip_socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fail_errno(f, "socket", errno);
  int one = 1;
  if (reuse && lwip_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) goto err_setsockopt;
  if (lwip_bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) goto err_bind;
  if (lwip_listen(fd, (int)backlog) < 0) goto err_listen;
  if (set_nonblocking(fd) < 0) goto err_ioctl;
  sbuf local = {0};
  if (local_addr(fd, &local, f)) { free(local.s); lwip_close(fd); return -1; }
  int id = add_sock(fd, f);
  if (id < 0) { free(local.s); return -1; }
  sb_printf(r, "{\"sock\":%d,\"local\":%s}", id, local.s ? local.s : "null");
  free(local.s);
  return 0;
  int e;
err_setsockopt: e = errno; lwip_close(fd); return fail_errno(f, "setsockopt(SO_REUSEADDR)", e);
err_bind: e = errno; lwip_close(fd); return fail_errno(f, "bind", e);
err_listen: e = errno; lwip_close(fd); return fail_errno(f, "listen", e);
err_ioctl: e = errno; lwip_close(fd); return fail_errno(f, "ioctl(FIONBIO)", e);
}

static int op_accept(const jval *args, sbuf *r, failure *f) {
  int lfd;
  double timeout;
  if (need_stack(f) || get_sock(args, &lfd, f) || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f)) return -1;
  double deadline = now_mono() + timeout;
  struct sockaddr_in peer;
  int fd;
  while (1) {
    socklen_t len = sizeof peer;
    memset(&peer, 0, sizeof peer);
    fd = lwip_accept(lfd, (struct sockaddr *)&peer, &len);
    if (fd >= 0) break;
    int e = errno;
    if (e != EWOULDBLOCK && e != EAGAIN) return fail_errno(f, "accept", e);
    int w = wait_fd(lfd, POLLIN, deadline);
    if (w < 0) return fail_errno(f, "poll", errno);
    if (w == 0) return fail(f, "timeout", "accept did not complete within %g s", timeout);
  }
  if (set_nonblocking(fd) < 0) {
    int e = errno;
    lwip_close(fd);
    return fail_errno(f, "ioctl(FIONBIO)", e);
  }
  int id = add_sock(fd, f);
  if (id < 0) return -1;
  sb_printf(r, "{\"sock\":%d,\"peer\":", id);
  put_addr(r, &peer);
  sb_puts(r, "}");
  return 0;
}

static int op_connect(const jval *args, sbuf *r, failure *f) {
  struct sockaddr_in to, local;
  int present, has_bind_addr, has_bind_port, reuse;
  u16_t port, bind_port = 0;
  double timeout;
  if (need_stack(f) || arg_addr(args, "addr", 1, &present, &to, f) || arg_port(args, "port", 1, &present, &port, f)
      || arg_addr(args, "bind_addr", 0, &has_bind_addr, &local, f)
      || arg_port(args, "bind_port", 0, &has_bind_port, &bind_port, f) || arg_bool(args, "reuseaddr", &reuse, 0, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  double deadline = now_mono() + timeout;
  to.sin_port = htons(port);
  if (!has_bind_addr) {
    memset(&local, 0, sizeof local);
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_ANY);
  }
  local.sin_port = htons(bind_port);
  int fd = lwip_socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return fail_errno(f, "socket", errno);
  const char *call = "ioctl(FIONBIO)";
  int one = 1, e = 0;
  if (set_nonblocking(fd) < 0) goto err;
  call = "setsockopt(SO_REUSEADDR)";
  if (reuse && lwip_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) goto err;
  call = "bind";
  if ((has_bind_addr || has_bind_port) && lwip_bind(fd, (struct sockaddr *)&local, sizeof local) < 0) goto err;
  call = "connect";
  if (lwip_connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
    if (errno != EINPROGRESS) goto err;
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w < 0) { call = "poll"; goto err; }
    if (w == 0) {
      /* A timed-out connect leaves no socket behind. */
      lwip_close(fd);
      return fail(f, "timeout", "connect did not complete within %g s", timeout);
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    call = "getsockopt(SO_ERROR)";
    if (lwip_getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) goto err;
    if (soerr) { errno = soerr; call = "connect"; goto err; }
  }
  sbuf la = {0};
  if (local_addr(fd, &la, f)) { free(la.s); lwip_close(fd); return -1; }
  int id = add_sock(fd, f);
  if (id < 0) { free(la.s); return -1; }
  sb_printf(r, "{\"sock\":%d,\"local\":%s}", id, la.s ? la.s : "null");
  free(la.s);
  return 0;
err:
  e = errno;
  lwip_close(fd);
  return fail_errno(f, call, e);
}

static int op_send(const jval *args, sbuf *r, failure *f) {
  int fd;
  const char *data64;
  double timeout;
  if (need_stack(f) || get_sock(args, &fd, f) || arg_str(args, "data", &data64, 1, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  unsigned char *data;
  size_t n, sent = 0;
  if (b64_decode(data64, strlen(data64), &data, &n)) return fail(f, "EBADMSG", "data is not base64");
  double deadline = now_mono() + timeout;
  /* Like a blocking send(): everything unless the deadline or an error comes first; a partial
   * count is reported rather than lost. */
  while (sent < n) {
    ssize_t k = lwip_send(fd, data + sent, n - sent, 0);
    if (k > 0) { sent += (size_t)k; continue; }
    int e = k < 0 ? errno : EIO;
    if (e == EWOULDBLOCK || e == EAGAIN) {
      int w = wait_fd(fd, POLLOUT, deadline);
      if (w > 0) continue;
      if (sent) break;
      free(data);
      if (w < 0) return fail_errno(f, "poll", errno);
      return fail(f, "timeout", "send did not complete within %g s", timeout);
    }
    if (sent) break;
    free(data);
    return fail_errno(f, "send", e);
  }
  free(data);
  sb_printf(r, "{\"sent\":%zu}", sent);
  return 0;
}

static int op_recv(const jval *args, sbuf *r, failure *f) {
  int fd, present;
  long long max = 65536;
  double timeout;
  if (need_stack(f) || get_sock(args, &fd, f) || arg_int(args, "max", &max, &present, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  if (!present) max = 65536;
  if (max <= 0) return fail(f, "EBADMSG", "max must be positive");
  if (max > (1 << 24)) max = 1 << 24;
  unsigned char *buf = malloc((size_t)max);
  if (!buf) return fail(f, "ENOMEM", "no memory for %lld bytes", max);
  double deadline = now_mono() + timeout;
  ssize_t k;
  while (1) {
    k = lwip_recv(fd, buf, (size_t)max, 0);
    if (k >= 0) break;
    int e = errno;
    if (e != EWOULDBLOCK && e != EAGAIN) { free(buf); return fail_errno(f, "recv", e); }
    int w = wait_fd(fd, POLLIN, deadline);
    if (w < 0) { e = errno; free(buf); return fail_errno(f, "poll", e); }
    if (w == 0) { free(buf); return fail(f, "timeout", "recv did not complete within %g s", timeout); }
  }
  sb_puts(r, "{\"data\":\"");
  b64_encode(r, buf, (size_t)k);
  sb_puts(r, "\"}");
  free(buf);
  return 0;
}

static int op_shutdown(const jval *args, sbuf *r, failure *f) {
  int fd, how;
  const char *s;
  if (need_stack(f) || get_sock(args, &fd, f) || arg_str(args, "how", &s, 1, f)) return -1;
  if (!strcmp(s, "rd")) how = SHUT_RD;
  else if (!strcmp(s, "wr")) how = SHUT_WR;
  else if (!strcmp(s, "rdwr")) how = SHUT_RDWR;
  else return fail(f, "EBADMSG", "how must be one of ['rd', 'rdwr', 'wr']");
  if (lwip_shutdown(fd, how) < 0) return fail_errno(f, "shutdown", errno);
  sb_puts(r, "{}");
  return 0;
}

/* close(). SO_LINGER {1, 0} makes it an ABORT (RFC 9293 §3.10.5), as on BSD and Linux; lwIP's
 * socket layer (api_msg.c, lwip_netconn_do_close_internal) aborts only when unsent or unacked data
 * remain and otherwise closes gracefully with a FIN, so the agent calls lwIP's own ABORT,
 * tcp_abort(), itself. Not in TIME-WAIT (tcp_abandon() frees a TIME-WAIT pcb without telling the
 * netconn, which frees it again), nor on a listener: with any linger >= 0 lwIP reads
 * pcb->unsent/unacked past the end of the smaller tcp_pcb_listen and may tcp_abort() it (an
 * assertion failure); there linger is cleared, and close() sends nothing either way. */
static int op_close(const jval *args, sbuf *r, failure *f) {
  int fd;
  if (need_stack(f) || take_sock(args, &fd, f)) return -1;
  int linger_wait = 0;
  LOCK_TCPIP_CORE();
  struct lwip_sock *sock = lwip_socket_dbg_get_socket(fd);
  struct tcp_pcb *pcb = sock && sock->conn ? sock->conn->pcb.tcp : NULL;
  if (pcb && sock->conn->linger >= 0) {
    if (pcb->state == LISTEN) sock->conn->linger = -1; /* see above: any linger >= 0 */
    else if (sock->conn->linger > 0) linger_wait = 1;
    else if (pcb->state == TIME_WAIT) sock->conn->linger = -1;
    else tcp_abort(pcb); /* err_tcp() detaches the pcb from the netconn */
  }
  UNLOCK_TCPIP_CORE();
  /* A lingering close blocks (lwIP refuses it on a non-blocking socket: EWOULDBLOCK). */
  if (linger_wait) {
    int off = 0;
    lwip_ioctl(fd, (long)FIONBIO, &off);
  }
  if (lwip_close(fd) < 0) return fail_errno(f, "close", errno);
  sb_puts(r, "{}");
  return 0;
}

typedef struct {
  const char *name;
  int level, opt, linger;
} sockopt;

static const sockopt SOCKOPTS[] = {
  {"SO_LINGER", SOL_SOCKET, SO_LINGER, 1},
  {"SO_RCVBUF", SOL_SOCKET, SO_RCVBUF, 0},
  {"SO_SNDBUF", SOL_SOCKET, SO_SNDBUF, 0},
  {"SO_REUSEADDR", SOL_SOCKET, SO_REUSEADDR, 0},
  {"TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY, 0},
};

static int get_opt(const jval *args, const sockopt **o, failure *f) {
  const char *name;
  if (arg_str(args, "opt", &name, 1, f)) return -1;
  for (size_t i = 0; i < sizeof SOCKOPTS / sizeof SOCKOPTS[0]; i++)
    if (!strcmp(SOCKOPTS[i].name, name)) { *o = &SOCKOPTS[i]; return 0; }
  return fail(f, "unsupported", "socket option %s is not supported", name);
}

static int op_setsockopt(const jval *args, sbuf *r, failure *f) {
  int fd;
  const sockopt *o;
  if (need_stack(f) || get_sock(args, &fd, f) || get_opt(args, &o, f)) return -1;
  const jval *v = jget(args, "value");
  int rc;
  if (o->linger) {
    const jval *a = v && v->t == J_ARR ? v->child : NULL, *b = a ? a->next : NULL;
    if (!a || !b || b->next || a->t != J_NUM || !a->is_int || b->t != J_NUM || !b->is_int)
      return fail(f, "EBADMSG", "SO_LINGER value must be [onoff, secs]");
    struct linger l = {.l_onoff = (int)a->i, .l_linger = (int)b->i};
    rc = lwip_setsockopt(fd, o->level, o->opt, &l, sizeof l);
  } else {
    int val;
    if (v && v->t == J_BOOL) val = v->b;
    else if (v && v->t == J_NUM && v->is_int) val = (int)v->i;
    else return fail(f, "EBADMSG", "%s value must be an integer", o->name);
    rc = lwip_setsockopt(fd, o->level, o->opt, &val, sizeof val);
  }
  if (rc < 0) return fail_errno(f, "setsockopt", errno);
  sb_puts(r, "{}");
  return 0;
}

static int op_getsockopt(const jval *args, sbuf *r, failure *f) {
  int fd;
  const sockopt *o;
  if (need_stack(f) || get_sock(args, &fd, f) || get_opt(args, &o, f)) return -1;
  if (o->linger) {
    struct linger l = {0, 0};
    socklen_t len = sizeof l;
    if (lwip_getsockopt(fd, o->level, o->opt, &l, &len) < 0) return fail_errno(f, "getsockopt", errno);
    sb_printf(r, "{\"value\":[%d,%d]}", l.l_onoff, l.l_linger);
  } else {
    int val = 0;
    socklen_t len = sizeof val;
    if (lwip_getsockopt(fd, o->level, o->opt, &val, &len) < 0) return fail_errno(f, "getsockopt", errno);
    sb_printf(r, "{\"value\":%d}", val);
  }
  return 0;
}

static const char *state_name(int s) {
  static const char *names[] = {"CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                                "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"};
  return s >= 0 && s <= 10 ? names[s] : "UNKNOWN";
}

/* The socket's pcb, read under the core lock: a netconn whose pcb is gone (reset, or closed by
 * the stack) is CLOSED. */
static int op_state(const jval *args, sbuf *r, failure *f) {
  int fd;
  if (need_stack(f) || get_sock(args, &fd, f)) return -1;
  LOCK_TCPIP_CORE();
  struct lwip_sock *sock = lwip_socket_dbg_get_socket(fd);
  int state = -1;
  if (sock && sock->conn) state = sock->conn->pcb.tcp ? (int)sock->conn->pcb.tcp->state : CLOSED;
  UNLOCK_TCPIP_CORE();
  if (state < 0) return fail(f, "EBADF", "lwIP has no socket %d", fd);
  sb_puts(r, "{\"state\":");
  sb_jcstr(r, state_name(state));
  sb_puts(r, "}");
  return 0;
}

static void put_pcb(sbuf *r, int *first, const ip_addr_t *lip, u16_t lport, const ip_addr_t *rip, u16_t rport,
                    int state) {
  char l[IPADDR_STRLEN_MAX], rr[IPADDR_STRLEN_MAX];
  ipaddr_ntoa_r(lip, l, sizeof l);
  ipaddr_ntoa_r(rip, rr, sizeof rr);
  sb_puts(r, *first ? "{\"local\":[" : ",{\"local\":[");
  *first = 0;
  sb_jcstr(r, l);
  sb_printf(r, ",%u],\"remote\":[", (unsigned)lport);
  sb_jcstr(r, rr);
  sb_printf(r, ",%u],\"state\":", (unsigned)rport);
  sb_jcstr(r, state_name(state));
  sb_puts(r, "}");
}

/* Every pcb of the stack: listeners, connections (SYN-RECEIVED included) and TIME-WAIT, which no
 * socket refers to any more. */
static int op_conns(const jval *args, sbuf *r, failure *f) {
  long long lp = 0, rp = 0;
  int has_lp, has_rp;
  if (need_stack(f) || arg_int(args, "local_port", &lp, &has_lp, f) || arg_int(args, "remote_port", &rp, &has_rp, f))
    return -1;
  int first = 1;
  sb_puts(r, "{\"conns\":[");
  LOCK_TCPIP_CORE();
  for (struct tcp_pcb_listen *p = tcp_listen_pcbs.listen_pcbs; p; p = p->next) {
    if ((has_lp && p->local_port != lp) || (has_rp && rp != 0)) continue;
    ip_addr_t any;
    ip_addr_set_zero_ip4(&any);
    put_pcb(r, &first, &p->local_ip, p->local_port, &any, 0, p->state);
  }
  struct tcp_pcb *lists[] = {tcp_active_pcbs, tcp_tw_pcbs};
  for (size_t i = 0; i < 2; i++)
    for (struct tcp_pcb *p = lists[i]; p; p = p->next) {
      if ((has_lp && p->local_port != lp) || (has_rp && p->remote_port != rp)) continue;
      put_pcb(r, &first, &p->local_ip, p->local_port, &p->remote_ip, p->remote_port, p->state);
    }
  UNLOCK_TCPIP_CORE();
  sb_puts(r, "]}");
  return 0;
}

static int op_sysctl(const jval *args, sbuf *r, failure *f) {
  (void)args;
  (void)r;
  return fail(f, "unsupported", "lwIP has no sysctls: its options are fixed at compile time");
}

static void fasttmr_now(void *arg) {
  tcp_fasttmr();
  sys_sem_signal((sys_sem_t *)arg);
}

/* The fast timer (delayed ACKs, refused data, pending closes) run now, behind every frame that
 * has arrived: a learner steps time itself instead of racing the 250 ms tick. */
static int op_tick(const jval *args, sbuf *r, failure *f) {
  (void)args;
  if (need_stack(f)) return -1;
  settle();
  sys_sem_t sem;
  if (sys_sem_new(&sem, 0) != ERR_OK) return fail(f, "ENOMEM", "no semaphore for the timer call");
  if (tcpip_callback(fasttmr_now, &sem) == ERR_OK) sys_arch_sem_wait(&sem, 0);
  sys_sem_free(&sem);
  sb_puts(r, "{}");
  return 0;
}

typedef int (*op_fn)(const jval *, sbuf *, failure *);

static const struct {
  const char *name;
  op_fn fn;
} HANDLERS[] = {
  {"hello", op_hello}, {"listen", op_listen}, {"accept", op_accept}, {"connect", op_connect},
  {"send", op_send}, {"recv", op_recv}, {"shutdown", op_shutdown}, {"close", op_close},
  {"setsockopt", op_setsockopt}, {"getsockopt", op_getsockopt}, {"state", op_state},
  {"conns", op_conns}, {"sysctl", op_sysctl}, {"tick", op_tick},
};

static op_fn find_op(const char *name) {
  for (size_t i = 0; i < sizeof HANDLERS / sizeof HANDLERS[0]; i++)
    if (!strcmp(HANDLERS[i].name, name)) return HANDLERS[i].fn;
  return NULL;
}

/* The reply's body without its id: "ok":...,"result"/"errno"...,"t":... */
static char *run_op(const char *op, const jval *args) {
  sbuf res = {0}, out = {0};
  failure f = {NULL, ""};
  op_fn fn = find_op(op);
  if (fn && fn != op_hello) settle();
  int rc = fn ? fn(args, &res, &f) : fail(&f, "unsupported", "unknown op '%s'", op);
  double t = now_mono();
  if (rc == 0 && !res.oom) {
    sb_puts(&out, "\"ok\":true,\"result\":");
    sb_puts(&out, res.s ? res.s : "{}");
  } else {
    if (rc == 0) fail(&f, "ENOMEM", "out of memory building the reply");
    sb_puts(&out, "\"ok\":false,\"errno\":");
    sb_jcstr(&out, f.code ? f.code : "EIO");
    sb_puts(&out, ",\"error\":");
    sb_jcstr(&out, f.msg);
  }
  sb_printf(&out, ",\"t\":%.6f", t);
  free(res.s);
  if (out.oom) {
    free(out.s);
    return NULL;
  }
  return out.s;
}

/* ------------------------------------------------------------------------------------------ */
/* background jobs                                                                              */

typedef struct job {
  int id;
  char op[32];
  jval *request; /* owned: the whole request the call came in */
  const jval *args;
  char *reply;
  int done;
  pthread_cond_t cond;
  struct job *next;
} job;

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static job *jobs;
static int next_job = 1;

static void *job_main(void *arg) {
  job *j = arg;
  char *reply = run_op(j->op, j->args);
  {
    sbuf msg = {0};
    sb_printf(&msg, "%d %s done: {", j->id, j->op);
    sb_puts(&msg, reply ? reply : "\"ok\":false");
    sb_puts(&msg, "}");
    log_line("job", msg.s ? msg.s : "");
    free(msg.s);
  }
  pthread_mutex_lock(&jobs_lock);
  j->reply = reply;
  j->done = 1;
  pthread_cond_broadcast(&j->cond);
  pthread_mutex_unlock(&jobs_lock);
  return NULL;
}

/* On success the job owns `request`. */
static int op_start(jval *request, const jval *args, sbuf *r, failure *f) {
  const jval *call = jget(args, "call"), *op = jget(call, "op"), *cargs = jget(call, "args");
  if (!call || call->t != J_OBJ || !op || op->t != J_STR) return fail(f, "EBADMSG", "call must be an object with an op");
  if (cargs && cargs->t != J_OBJ && cargs->t != J_NULL) return fail(f, "EBADMSG", "call args must be an object");
  if (!strcmp(op->s, "start") || !strcmp(op->s, "wait") || !strcmp(op->s, "quit"))
    return fail(f, "EBADMSG", "%s cannot run in the background", op->s);
  if (!find_op(op->s)) return fail(f, "unsupported", "unknown op '%.40s'", op->s);
  job *j = calloc(1, sizeof *j);
  if (!j) return fail(f, "ENOMEM", "out of memory");
  snprintf(j->op, sizeof j->op, "%s", op->s);
  j->request = request;
  j->args = cargs && cargs->t == J_OBJ ? cargs : NULL;
  pthread_cond_init(&j->cond, NULL);
  pthread_mutex_lock(&jobs_lock);
  j->id = next_job++;
  j->next = jobs;
  jobs = j;
  pthread_mutex_unlock(&jobs_lock);
  pthread_t th;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&th, &attr, job_main, j) != 0) {
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&jobs_lock);
    jobs = j->next;
    pthread_mutex_unlock(&jobs_lock);
    pthread_cond_destroy(&j->cond);
    free(j);
    return fail(f, "EAGAIN", "cannot start a thread");
  }
  pthread_attr_destroy(&attr);
  sb_printf(r, "{\"job\":%d}", j->id);
  return 0;
}

/* The job's reply as if the call had been made directly (its own "t"), or a failure. */
static char *op_wait(const jval *args, failure *f, int *failed) {
  long long id;
  double timeout;
  *failed = 1;
  if (arg_int_req(args, "job", &id, f) || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f)) return NULL;
  pthread_mutex_lock(&jobs_lock);
  job **pp = &jobs;
  while (*pp && (*pp)->id != id) pp = &(*pp)->next;
  job *j = *pp;
  if (!j) {
    pthread_mutex_unlock(&jobs_lock);
    fail(f, "ESRCH", "no job %lld", id);
    return NULL;
  }
  double deadline = now_mono() + timeout;
  while (!j->done) {
    double remaining = deadline - now_mono();
    if (remaining <= 0) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double until = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (remaining < 3600 ? remaining : 3600);
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&j->cond, &jobs_lock, &ts);
  }
  if (!j->done) {
    pthread_mutex_unlock(&jobs_lock);
    fail(f, "timeout", "job %lld (%s) still running after %g s", id, j->op, timeout);
    return NULL;
  }
  *pp = j->next;
  pthread_mutex_unlock(&jobs_lock);
  char *reply = j->reply;
  jfree(j->request);
  pthread_cond_destroy(&j->cond);
  free(j);
  if (!reply) {
    fail(f, "ENOMEM", "the job's reply was lost (out of memory)");
    return NULL;
  }
  *failed = 0;
  return reply;
}

/* ------------------------------------------------------------------------------------------ */
/* control channel                                                                              */

static int write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t k = write(fd, s, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

static char *failure_body(const failure *f) {
  sbuf out = {0};
  sb_puts(&out, "\"ok\":false,\"errno\":");
  sb_jcstr(&out, f->code);
  sb_puts(&out, ",\"error\":");
  sb_jcstr(&out, f->msg);
  sb_printf(&out, ",\"t\":%.6f", now_mono());
  return out.s;
}

/* One request line -> the reply line; sets *quit. */
static char *handle_line(const char *line, size_t n, int *quit) {
  const char *perr = NULL;
  jval *req = jparse(line, n, &perr);
  const jval *id = NULL;
  char *body = NULL;
  int owned = 0;
  failure f = {NULL, ""};
  if (!req) {
    fail(&f, "EBADMSG", "malformed request: %s", perr ? perr : "bad JSON");
    body = failure_body(&f);
  } else {
    id = jget(req, "id");
    const jval *op = jget(req, "op"), *args = jget(req, "args");
    if (req->t != J_OBJ || !id || !op || op->t != J_STR || (args && args->t != J_OBJ && args->t != J_NULL)) {
      fail(&f, "EBADMSG", "malformed request: %s",
           req->t != J_OBJ ? "request is not an object" : "request needs an id, an op string, and an args object");
      body = failure_body(&f);
    } else {
      static const jval empty = {.t = J_OBJ};
      if (!args || args->t == J_NULL) args = &empty;
      if (!strcmp(op->s, "quit")) {
        *quit = 1;
        sbuf out = {0};
        sb_printf(&out, "\"ok\":true,\"result\":{},\"t\":%.6f", now_mono());
        body = out.s;
      } else if (!strcmp(op->s, "start")) {
        sbuf res = {0};
        if (op_start(req, args, &res, &f) == 0) {
          owned = 1;
          sbuf out = {0};
          sb_puts(&out, "\"ok\":true,\"result\":");
          sb_puts(&out, res.s ? res.s : "{}");
          sb_printf(&out, ",\"t\":%.6f", now_mono());
          body = out.s;
        } else {
          body = failure_body(&f);
        }
        free(res.s);
      } else if (!strcmp(op->s, "wait")) {
        int failed;
        body = op_wait(args, &f, &failed);
        if (failed) body = failure_body(&f);
      } else {
        body = run_op(op->s, args);
      }
    }
  }
  sbuf line_out = {0};
  sb_puts(&line_out, "{\"id\":");
  jwrite(&line_out, id);
  sb_puts(&line_out, ",");
  sb_puts(&line_out, body ? body : "\"ok\":false,\"errno\":\"ENOMEM\",\"error\":\"out of memory\",\"t\":0");
  sb_puts(&line_out, "}");
  free(body);
  /* id points into req: serialise before the tree goes (a started job keeps it). */
  if (!owned) jfree(req);
  if (line_out.oom) {
    free(line_out.s);
    return strdup("{\"id\":null,\"ok\":false,\"errno\":\"ENOMEM\",\"error\":\"out of memory\",\"t\":0}");
  }
  return line_out.s;
}

static void serve(int rfd, int wfd) {
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  int discarding = 0; /* inside an over-long line: drop it up to its newline */
  if (!buf) return;
  while (1) {
    char *nl = memchr(buf, '\n', len);
    if (!nl) {
      if (len == cap) {
        if (cap >= MAX_LINE) {
          if (!discarding) {
            const char *msg = "{\"id\":null,\"ok\":false,\"errno\":\"EBADMSG\",\"error\":\"malformed request: line too long\",\"t\":0}\n";
            log_line("<", "line too long: discarded");
            if (write_all(wfd, msg, strlen(msg))) break;
          }
          discarding = 1;
          len = 0;
        } else {
          char *nb = realloc(buf, cap * 2);
          if (!nb) { discarding = 1; len = 0; continue; }
          buf = nb;
          cap *= 2;
        }
      }
      ssize_t k = read(rfd, buf + len, cap - len);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) {
        log_line("eof", "control channel closed");
        break;
      }
      len += (size_t)k;
      continue;
    }
    size_t n = (size_t)(nl - buf);
    int skip = discarding;
    discarding = 0;
    char *line = buf;
    while (n && (line[0] == ' ' || line[0] == '\t' || line[0] == '\r')) { line++; n--; }
    while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r')) n--;
    if (!skip && n) {
      char *copy = strndup(line, n);
      if (copy) { log_line(">", copy); free(copy); }
      int quit = 0;
      char *reply = handle_line(line, n, &quit);
      if (reply) {
        log_line("<", reply);
        size_t rl = strlen(reply);
        reply[rl] = '\n'; /* replaces the terminator: written by length */
        int wr = write_all(wfd, reply, rl + 1);
        free(reply);
        if (wr) { logf_("eof", "control channel broken: %s", strerror(errno)); break; }
      }
      if (quit) break;
    }
    size_t used = (size_t)(nl - buf) + 1;
    memmove(buf, buf + used, len - used);
    len -= used;
  }
  free(buf);
}

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

int main(int argc, char **argv) {
  const char *unix_path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--unix") && i + 1 < argc) unix_path = argv[++i];
    else if (!strncmp(argv[i], "--unix=", 7)) unix_path = argv[i] + 7;
    else {
      fprintf(stderr, "usage: %s [--unix PATH]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  /* docker stop sends SIGTERM to PID 1, which has no default action there. */
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);

  /* Keep the protocol on a private fd: a stray printf() in the library must not corrupt it. */
  int out_fd = dup(1);
  dup2(2, 1);
  setvbuf(stdout, NULL, _IONBF, 0);

  if (unix_path) {
    struct sockaddr_un sa;
    if (strlen(unix_path) >= sizeof sa.sun_path) {
      logf_("exit", "socket path too long: %s", unix_path);
      return 1;
    }
    unlink(unix_path);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, unix_path);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      /* Typically a run directory that uid 0 without CAP_DAC_OVERRIDE cannot write. */
      logf_("exit", "cannot serve on %s: %s", unix_path, strerror(errno));
      return 1;
    }
    /* The harness may run as another uid; the run directory guards access. */
    chmod(unix_path, 0666);
    if (listen(lfd, 1) < 0) {
      logf_("exit", "cannot listen on %s: %s", unix_path, strerror(errno));
      unlink(unix_path);
      return 1;
    }
    logf_("ready", "pid %d %s %s listening on %s", (int)getpid(), STACK, LWIP_VERSION_STRING, unix_path);
    int cfd;
    do cfd = accept(lfd, NULL, NULL); while (cfd < 0 && errno == EINTR);
    close(lfd);
    if (cfd < 0) {
      logf_("exit", "accept on %s: %s", unix_path, strerror(errno));
      unlink(unix_path);
      return 1;
    }
    log_line("ready", "control connection accepted");
    serve(cfd, cfd);
    close(cfd);
    unlink(unix_path);
  } else {
    logf_("ready", "pid %d %s %s on stdin/stdout", (int)getpid(), STACK, LWIP_VERSION_STRING);
    serve(0, out_fd);
  }
  log_line("exit", "bye");
  /* lwIP's threads never end: leave without joining them. */
  _exit(0);
}
