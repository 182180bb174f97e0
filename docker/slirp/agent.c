/*
 * synfin agent for libslirp (Debian's libslirp0): speaks docs/agent-protocol.md over a unix socket
 * (--unix PATH) or stdin/stdout. slirp is a NAT stack: it terminates the TCP connections of its
 * "guest" (here the synfin peer, on the TAP named by SYNFIN_IFACE) and relays each one to a socket
 * of the host it runs on. The socket API under test is therefore that host side, and the agent
 * maps the protocol's calls onto it (harness/targets/slirp.py lists what that changes):
 *
 *   listen   a kernel socket listening on 127.0.0.1:port. slirp is given the target's address as
 *            its "host" alias (vhost), so a guest SYN to it makes slirp connect() to loopback:port;
 *            it answers the SYN only once that connect succeeded.
 *   accept   the next relayed connection whose slirp TCB is ESTABLISHED (read from
 *            slirp_connection_info()): the kernel completes the loopback handshake at the guest's
 *            SYN, before slirp even answers it, so accept() alone would hand out half-open
 *            connections, in the order of their SYNs.
 *   connect  a host forward (slirp_add_hostfwd) from a fresh loopback port to the peer's address
 *            and port, and a kernel connect() to it: slirp accepts it and sends its SYN from the
 *            target's address and the host socket's port (bind_port binds that socket). The host
 *            connect() succeeds before slirp's SYN goes out, so the call waits until slirp's TCB
 *            is ESTABLISHED, and fails with ECONNREFUSED when slirp dropped the attempt first.
 *   send, recv, shutdown, close, socket options: on the host socket; slirp turns what it reads
 *            from it into segments, and what it receives into writes on it.
 *   state, conns  slirp's own TCBs (slirp_connection_info()); listeners are the agent's.
 *
 * The host sockets live in the container's own network namespace (loopback only): nothing leaves
 * the lab. libslirp is not thread-safe: one stack thread polls it, and every other use of it holds
 * slirp_lock.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/if_tun.h>

#include <glib.h>
#include <libslirp.h>

#define STACK "slirp"
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
  if (strchr(s, ':')) return fail(f, "EAFNOSUPPORT", "slirp target: only IPv4 is used in the lab (%s)", s);
  if (inet_pton(AF_INET, s, &sa->sin_addr) != 1) return fail(f, "EBADMSG", "not a numeric IP address: '%s'", s);
  return 0;
}

static int arg_port(const jval *args, const char *name, int required, int *present, uint16_t *port, failure *f) {
  long long v = 0;
  if (arg_int(args, name, &v, present, f)) return -1;
  if (!*present) return required ? malformed(f, "missing argument '%s'", name) : 0;
  if (v < 0 || v > 65535) return malformed(f, "argument '%s' is not a port", name);
  *port = (uint16_t)v;
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

static Slirp *the_slirp;
static int stack_up;
static char stack_error[300];
static pthread_mutex_t stack_lock = PTHREAD_MUTEX_INITIALIZER; /* bring-up, once */

static pthread_mutex_t slirp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slirp_tick = PTHREAD_COND_INITIALIZER; /* the stack thread finished a round */
static unsigned long rounds;
static int wake_fds[2] = {-1, -1};
static int tap_fd = -1;
static struct in_addr vhost_addr, loopback_addr;

/* slirp's own host fds, by number: a generation that changes whenever slirp registers or drops
 * one (a number is reused as soon as it is closed), and the host-side port that ties it to an
 * agent socket: for a connection slirp accepted from a host forward, the port of the host socket
 * that connected (the agent's; slirp's SYN carries it as the target's port); for one slirp
 * connect()ed for the guest, the local port of slirp's socket (the peer port of the connection
 * the agent accepts). */
#define FD_MAX 65536
static unsigned fd_gen[FD_MAX];
static uint16_t fd_port[FD_MAX];
static uint16_t fd_fwd_port[FD_MAX]; /* a host forward's connection: the forward's own port */
static unsigned char fd_incoming[FD_MAX];

static double deadline_in(double seconds) { return now_mono() + seconds; }

static void timespec_at(struct timespec *ts, double mono_deadline) {
  /* pthread_cond_timedwait's clock is CLOCK_REALTIME: convert the monotonic deadline. */
  double left = mono_deadline - now_mono();
  if (left < 0) left = 0;
  clock_gettime(CLOCK_REALTIME, ts);
  double until = (double)ts->tv_sec + (double)ts->tv_nsec / 1e9 + left;
  ts->tv_sec = (time_t)until;
  ts->tv_nsec = (long)((until - (double)ts->tv_sec) * 1e9);
}

static void wake_stack(void) {
  char c = 1;
  if (wake_fds[1] >= 0 && write(wake_fds[1], &c, 1) < 0) { /* full: it is awake anyway */ }
}

/* -- slirp's callbacks (all run under slirp_lock, from inside libslirp) -------------------- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque) {
  (void)opaque;
  ssize_t w;
  do w = write(tap_fd, buf, len); while (w < 0 && errno == EINTR);
  return w < 0 && errno == EAGAIN ? (ssize_t)len : w; /* a full TAP queue drops it, as a NIC would */
}

static void cb_guest_error(const char *msg, void *opaque) {
  (void)opaque;
  logf_("slirp", "guest error: %s", msg);
}

static int64_t cb_clock_get_ns(void *opaque) {
  (void)opaque;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Timers serve IPv6 router advertisements only, and IPv6 is off. */
static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque) {
  (void)cb; (void)cb_opaque; (void)opaque;
  log_line("slirp", "timer_new called (unexpected with IPv6 off): the timer never fires");
  static int dummy;
  return &dummy;
}

static void *cb_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque) {
  (void)id;
  return cb_timer_new(NULL, cb_opaque, opaque);
}

static void cb_timer_free(void *timer, void *opaque) { (void)timer; (void)opaque; }
static void cb_timer_mod(void *timer, int64_t expire, void *opaque) { (void)timer; (void)expire; (void)opaque; }

static void cb_register_poll_fd(int fd, void *opaque) {
  (void)opaque;
  if (fd < 0 || fd >= FD_MAX) return;
  fd_gen[fd]++;
  fd_port[fd] = fd_fwd_port[fd] = 0;
  fd_incoming[fd] = 0;
  /* Registered right after accept() (a host forward's connection) or before connect() (one made
   * for the guest): only the first has a peer yet. */
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_family == AF_INET) {
    fd_incoming[fd] = 1;
    fd_port[fd] = ntohs(sa.sin_port);
    len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0) fd_fwd_port[fd] = ntohs(sa.sin_port);
  }
}

static void cb_unregister_poll_fd(int fd, void *opaque) {
  (void)opaque;
  if (fd < 0 || fd >= FD_MAX) return;
  fd_gen[fd]++;
  fd_port[fd] = fd_fwd_port[fd] = 0;
  fd_incoming[fd] = 0;
}

static void cb_notify(void *opaque) {
  (void)opaque;
  wake_stack();
}

static const SlirpCb CALLBACKS = {
  .send_packet = cb_send_packet,
  .guest_error = cb_guest_error,
  .clock_get_ns = cb_clock_get_ns,
  .timer_new = cb_timer_new,
  .timer_free = cb_timer_free,
  .timer_mod = cb_timer_mod,
  .register_poll_fd = cb_register_poll_fd,
  .unregister_poll_fd = cb_unregister_poll_fd,
  .notify = cb_notify,
  .init_completed = NULL,
  .timer_new_opaque = cb_timer_new_opaque,
};

/* -- the stack thread ----------------------------------------------------------------------- */

static struct pollfd *pfds;
static size_t npfds, cap_pfds;

static int add_pfd(int fd, short events) {
  if (npfds == cap_pfds) {
    size_t cap = cap_pfds ? cap_pfds * 2 : 64;
    struct pollfd *p = realloc(pfds, cap * sizeof *p);
    if (!p) return -1;
    pfds = p;
    cap_pfds = cap;
  }
  pfds[npfds].fd = fd;
  pfds[npfds].events = events;
  pfds[npfds].revents = 0;
  return (int)npfds++;
}

static int cb_add_poll(int fd, int events, void *opaque) {
  (void)opaque;
  short ev = 0;
  if (events & SLIRP_POLL_IN) ev |= POLLIN;
  if (events & SLIRP_POLL_OUT) ev |= POLLOUT;
  if (events & SLIRP_POLL_PRI) ev |= POLLPRI;
  return add_pfd(fd, ev);
}

static int cb_get_revents(int idx, void *opaque) {
  (void)opaque;
  if (idx < 0 || (size_t)idx >= npfds) return 0;
  short rev = pfds[idx].revents;
  int out = 0;
  if (rev & POLLIN) out |= SLIRP_POLL_IN;
  if (rev & POLLOUT) out |= SLIRP_POLL_OUT;
  if (rev & POLLPRI) out |= SLIRP_POLL_PRI;
  if (rev & POLLERR) out |= SLIRP_POLL_ERR;
  if (rev & POLLHUP) out |= SLIRP_POLL_HUP;
  return out;
}

#define FRAME_MAX 65536

/* Every frame waiting on the TAP goes into slirp, in order (called with slirp_lock held). */
static void read_tap(void) {
  static uint8_t buf[FRAME_MAX];
  for (int i = 0; i < 1024; i++) {
    ssize_t n = read(tap_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) logf_("tap", "read failed: %s", strerror(errno));
      return;
    }
    if (n >= 14) slirp_input(the_slirp, buf, (int)n);
  }
}

/* One round: the fds slirp wants watched, the TAP and the wake pipe, polled for as long as
 * slirp's timers allow; then the frames that came, then slirp's own fds and timers. Other threads
 * use slirp only between rounds' polls, under the lock. */
static void *stack_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&slirp_lock);
  while (1) {
    npfds = 0;
    add_pfd(tap_fd, POLLIN);
    add_pfd(wake_fds[0], POLLIN);
    uint32_t timeout = UINT32_MAX;
    slirp_pollfds_fill(the_slirp, &timeout, cb_add_poll, NULL);
    pthread_mutex_unlock(&slirp_lock);
    int ms = timeout == UINT32_MAX || timeout > 1000 ? 1000 : (int)timeout;
    int rc = poll(pfds, npfds, ms);
    int failed = rc < 0 && errno != EINTR;
    pthread_mutex_lock(&slirp_lock);
    if (pfds[1].revents & POLLIN) {
      char drain[256];
      while (read(wake_fds[0], drain, sizeof drain) > 0) {}
    }
    read_tap();
    slirp_pollfds_poll(the_slirp, failed, cb_get_revents, NULL);
    rounds++;
    pthread_cond_broadcast(&slirp_tick);
  }
  return NULL;
}

/* A kernel stack has processed a frame by the time the sender's send() returns; here it waits in
 * the TAP queue for the stack thread. Before an operation looks at or acts on the stack, let two
 * whole rounds pass: every frame that arrived before, and what the host sockets already said,
 * have then been through slirp. */
static void settle(void) {
  if (!stack_up) return;
  pthread_mutex_lock(&slirp_lock);
  unsigned long until = rounds + 2;
  double deadline = deadline_in(0.5);
  while (rounds < until && now_mono() < deadline) {
    wake_stack();
    struct timespec ts;
    timespec_at(&ts, deadline_in(0.01) < deadline ? deadline_in(0.01) : deadline);
    pthread_cond_timedwait(&slirp_tick, &slirp_lock, &ts);
  }
  pthread_mutex_unlock(&slirp_lock);
}

/* Wait (slirp_lock held) for the stack thread's next round, or `deadline`, at most 10 ms. */
static void wait_round(double deadline) {
  double until = deadline_in(0.01);
  if (until > deadline) until = deadline;
  struct timespec ts;
  timespec_at(&ts, until);
  pthread_cond_timedwait(&slirp_tick, &slirp_lock, &ts);
}

static int parse_in4(const char *s, struct in_addr *a) { return s && inet_pton(AF_INET, s, a) == 1 ? 0 : -1; }

/* Bring slirp up on the TAP, once: attach (TUNSETIFF on the TAP the harness made), then a slirp
 * whose virtual network is the lab's block and whose "host" is the target's address. */
static int stack_start(failure *f) {
  pthread_mutex_lock(&stack_lock);
  if (stack_up) { pthread_mutex_unlock(&stack_lock); return 0; }
  if (stack_error[0]) { pthread_mutex_unlock(&stack_lock); return fail(f, "EIO", "%s", stack_error); }

  const char *iface = getenv("SYNFIN_IFACE"), *addr_s = getenv("SYNFIN_ADDR"), *mac_s = getenv("SYNFIN_MAC");
  char addr[64];
  int prefix = 24;
  if (!iface || !*iface) iface = "tap0";
  if (!addr_s || strlen(addr_s) >= sizeof addr) { pthread_mutex_unlock(&stack_lock); return fail(f, "EINVAL", "SYNFIN_ADDR is unset"); }
  strcpy(addr, addr_s);
  char *slash = strchr(addr, '/');
  if (slash) { *slash = 0; prefix = atoi(slash + 1); }
  struct in_addr host;
  if (parse_in4(addr, &host) || prefix < 1 || prefix > 30) {
    pthread_mutex_unlock(&stack_lock);
    return fail(f, "EINVAL", "SYNFIN_ADDR is not an IPv4 address/prefix: %s", addr_s);
  }
  uint32_t mask = prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);

  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
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
  if (pipe2(wake_fds, O_NONBLOCK | O_CLOEXEC) < 0) {
    snprintf(stack_error, sizeof stack_error, "cannot make the wake pipe: %s", strerror(errno));
    pthread_mutex_unlock(&stack_lock);
    return fail(f, "EIO", "%s", stack_error);
  }

  double t0 = now_mono();
  SlirpConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.version = 4;
  cfg.restricted = 0;
  cfg.in_enabled = true;
  cfg.vnetwork.s_addr = htonl(ntohl(host.s_addr) & mask);
  cfg.vnetmask.s_addr = htonl(mask);
  cfg.vhost = host;
  cfg.in6_enabled = false;
  cfg.disable_host_loopback = false; /* the target's address must lead to loopback */
  cfg.enable_emu = false;
  cfg.disable_dns = true;
  cfg.disable_dhcp = true;
  vhost_addr = host;
  loopback_addr.s_addr = htonl(INADDR_LOOPBACK);
  pthread_mutex_lock(&slirp_lock);
  the_slirp = slirp_new(&cfg, &CALLBACKS, NULL);
  pthread_mutex_unlock(&slirp_lock);
  pthread_t th;
  if (!the_slirp || pthread_create(&th, NULL, stack_main, NULL) != 0) {
    snprintf(stack_error, sizeof stack_error, "cannot bring slirp up on %s", iface);
    pthread_mutex_unlock(&stack_lock);
    return fail(f, "EIO", "%s", stack_error);
  }
  pthread_detach(th);
  stack_up = 1;
  logf_("stack", "libslirp %s up on %s: vhost %s, vnetwork %s/%d (the lab's MAC %s is not slirp's: it answers as "
        "52:55 + vhost) in %.1f ms", slirp_version_string(), iface, addr, inet_ntoa(cfg.vnetwork), prefix,
        mac_s ? mac_s : "?", (now_mono() - t0) * 1e3);
  pthread_mutex_unlock(&stack_lock);
  return 0;
}

static int need_stack(failure *f) {
  if (stack_up) return 0;
  return fail(f, "ENETDOWN", "the stack is not up yet (hello brings it up)");
}

/* -- slirp's table of connections ------------------------------------------------------------- */

typedef struct {
  char state[16];          /* RFC 9293's name */
  int fd;
  unsigned gen;
  int incoming;            /* accepted from a host forward: the target's active open */
  struct in_addr laddr, raddr; /* the target's end, the guest's end */
  uint16_t lport, rport;
  uint16_t host_port;      /* see fd_port */
  uint16_t fwd_port;       /* incoming: the host forward it came through */
} row;

static const char *rfc_state(const char *s) {
  static const struct { const char *slirp, *rfc; } names[] = {
    {"CLOSED", "CLOSED"}, {"LISTEN", "LISTEN"}, {"SYN_SENT", "SYN-SENT"}, {"SYN_RCVD", "SYN-RECEIVED"},
    {"ESTABLISHED", "ESTABLISHED"}, {"CLOSE_WAIT", "CLOSE-WAIT"}, {"FIN_WAIT_1", "FIN-WAIT-1"},
    {"CLOSING", "CLOSING"}, {"LAST_ACK", "LAST-ACK"}, {"FIN_WAIT_2", "FIN-WAIT-2"}, {"TIME_WAIT", "TIME-WAIT"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(names[i].slirp, s)) return names[i].rfc;
  return NULL;
}

/* Past the handshake: what accept() and connect() wait for. */
static int synchronized(const char *state) {
  return strcmp(state, "CLOSED") && strcmp(state, "LISTEN") && strcmp(state, "SYN-SENT") && strcmp(state, "SYN-RECEIVED");
}

/* slirp's TCBs, parsed from slirp_connection_info() (libslirp's only view of them): one line per
 * TCP socket, "  TCP[STATE]  fd  src-addr src-port  dst-addr dst-port recvq sendq". For a
 * connection made for the guest, src is the guest's end and dst the target's; for one accepted
 * from a host forward, src is the host side's listening address (loopback) and dst the guest's.
 * Host forwards themselves and sockets without a TCB are left out. Called with slirp_lock held;
 * the caller frees *out. */
static int read_rows(row **out, size_t *n) {
  char *info = slirp_connection_info(the_slirp);
  size_t cap = 16, count = 0;
  row *rows = malloc(cap * sizeof *rows);
  if (!info || !rows) { g_free(info); free(rows); return -1; }
  for (char *line = info, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    while (*line == ' ') line++;
    if (strncmp(line, "TCP[", 4)) continue;
    char state[32], src[64], dst[64];
    int fd, sport, dport;
    if (sscanf(line, "TCP[%31[^]]] %d %63s %d %63s %d", state, &fd, src, &sport, dst, &dport) != 6) continue;
    const char *rfc = rfc_state(state);
    if (!rfc) continue; /* HOST_FORWARD, NONE */
    row r;
    memset(&r, 0, sizeof r);
    snprintf(r.state, sizeof r.state, "%s", rfc);
    r.fd = fd;
    int valid_fd = fd >= 0 && fd < FD_MAX;
    r.gen = valid_fd ? fd_gen[fd] : 0;
    struct in_addr a = {0}, b = {0};
    parse_in4(src, &a);
    parse_in4(dst, &b);
    r.incoming = a.s_addr == loopback_addr.s_addr || (valid_fd && fd_incoming[fd]);
    if (r.incoming) {
      if (valid_fd && !fd_port[fd]) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0) fd_port[fd] = ntohs(sa.sin_port);
      }
      r.host_port = valid_fd ? fd_port[fd] : 0;
      r.fwd_port = valid_fd ? fd_fwd_port[fd] : 0;
      r.laddr = vhost_addr;
      r.lport = r.host_port; /* slirp keeps the host socket's port as the target's (sotranslate_accept) */
      r.raddr = b;
      r.rport = (uint16_t)dport;
    } else {
      if (valid_fd && !fd_port[fd]) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 && sa.sin_addr.s_addr == loopback_addr.s_addr)
          fd_port[fd] = ntohs(sa.sin_port);
      }
      r.host_port = valid_fd ? fd_port[fd] : 0;
      r.laddr = b;
      r.lport = (uint16_t)dport;
      r.raddr = a;
      r.rport = (uint16_t)sport;
    }
    if (count == cap) {
      row *more = realloc(rows, cap * 2 * sizeof *rows);
      if (!more) { g_free(info); free(rows); return -1; }
      rows = more;
      cap *= 2;
    }
    rows[count++] = r;
  }
  g_free(info);
  *out = rows;
  *n = count;
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* sockets                                                                                      */

/* A host connection accepted from a listener whose slirp TCB is not ESTABLISHED yet. */
typedef struct pending {
  int fd;
  uint16_t slirp_port; /* its peer's port: slirp's socket */
  struct pending *next;
} pending;

typedef struct {
  int fd;                  /* the host-side kernel socket; 0 = free slot */
  int listener;
  struct in_addr laddr;    /* listener: the address it was asked to listen on */
  uint16_t port;           /* listener: its port */
  int slirp_fd;            /* connection: slirp's socket for it, while its generation holds */
  unsigned slirp_gen;
  pending *queue;          /* listener */
} asock;

static pthread_mutex_t socks_lock = PTHREAD_MUTEX_INITIALIZER;
static asock socks[MAX_SOCKS];
static int next_sock = 1;

static int add_sock(const asock *s, failure *f) {
  pthread_mutex_lock(&socks_lock);
  for (int tries = 0; tries < MAX_SOCKS - 1; tries++) {
    int id = next_sock;
    next_sock = next_sock + 1 >= MAX_SOCKS ? 1 : next_sock + 1;
    if (socks[id].fd == 0) {
      socks[id] = *s;
      pthread_mutex_unlock(&socks_lock);
      return id;
    }
  }
  pthread_mutex_unlock(&socks_lock);
  close(s->fd);
  return fail(f, "EMFILE", "the agent holds too many sockets");
}

static int get_sock(const jval *args, asock *out, int *id_out, failure *f) {
  long long id;
  if (arg_int_req(args, "sock", &id, f)) return -1;
  pthread_mutex_lock(&socks_lock);
  int ok = id > 0 && id < MAX_SOCKS && socks[id].fd > 0;
  if (ok) *out = socks[id];
  pthread_mutex_unlock(&socks_lock);
  if (!ok) return fail(f, "EBADF", "no socket %lld", id);
  if (id_out) *id_out = (int)id;
  return 0;
}

static int take_sock(const jval *args, asock *out, failure *f) {
  long long id;
  if (arg_int_req(args, "sock", &id, f)) return -1;
  pthread_mutex_lock(&socks_lock);
  int ok = id > 0 && id < MAX_SOCKS && socks[id].fd > 0;
  if (ok) {
    *out = socks[id];
    memset(&socks[id], 0, sizeof socks[id]);
  }
  pthread_mutex_unlock(&socks_lock);
  if (!ok) return fail(f, "EBADF", "no socket %lld", id);
  return 0;
}

/* Wait for events on one host socket: 1 ready, 0 deadline passed, -1 error (errno set). */
static int wait_fd(int fd, short events, double deadline) {
  while (1) {
    double remaining = deadline - now_mono();
    if (remaining <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int rc = poll(&p, 1, (int)ceil(remaining * 1000.0));
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

static void put_addr(sbuf *b, struct in_addr a, uint16_t port) {
  char s[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &a, s, sizeof s);
  sb_puts(b, "[");
  sb_jcstr(b, s);
  sb_printf(b, ",%u]", (unsigned)port);
}

/* Host sockets always reuse addresses: the loopback connections' own TIME-WAITs belong to the
 * host, not to the stack under test, and must not make a port the harness picked unusable. */
static int host_socket(failure *f) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail_errno(f, "socket", errno);
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    return fail_errno(f, "setsockopt(SO_REUSEADDR)", e);
  }
  return fd;
}

/* The agent's own address arguments name the target's end in the lab: its address (or any). */
static int host_addr_for(struct in_addr a, struct in_addr *out, failure *f) {
  if (a.s_addr == htonl(INADDR_ANY)) { out->s_addr = htonl(INADDR_ANY); return 0; }
  if (a.s_addr == vhost_addr.s_addr || a.s_addr == loopback_addr.s_addr) { *out = loopback_addr; return 0; }
  char s[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, s, sizeof s);
  return fail(f, "EADDRNOTAVAIL", "[Errno %d] bind: %s is not the target's address", EADDRNOTAVAIL, s);
}

/* ------------------------------------------------------------------------------------------ */
/* ops                                                                                          */

static const char *OPS[] = {"accept", "close", "conns", "connect", "getsockopt", "hello", "listen", "quit",
                            "recv", "send", "setsockopt", "shutdown", "start", "state", "sysctl", "wait"};

static int op_hello(const jval *args, sbuf *r, failure *f) {
  (void)args;
  if (stack_start(f)) return -1;
  sb_puts(r, "{\"stack\":\"" STACK "\",\"version\":");
  sb_jcstr(r, slirp_version_string());
  sb_printf(r, ",\"pid\":%d,\"ops\":[", (int)getpid());
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) sb_printf(r, "%s\"%s\"", i ? "," : "", OPS[i]);
  sb_puts(r, "]}");
  return 0;
}

static const char RCVBUF_WHY[] =
  "slirp's receive window is its own fixed socket buffer (TCP_RCVSPACE, 128 KiB, shown as at most 65535): "
  "SO_RCVBUF would size only the host socket behind it";

static int op_listen(const jval *args, sbuf *r, failure *f) {
  struct sockaddr_in sa;
  int present, reuse, has_rcvbuf;
  uint16_t port;
  long long backlog = 16, rcvbuf;
  if (need_stack(f) || arg_addr(args, "addr", 1, &present, &sa, f) || arg_port(args, "port", 1, &present, &port, f))
    return -1;
  if (arg_int(args, "backlog", &backlog, &present, f) || arg_bool(args, "reuseaddr", &reuse, 0, f)
      || arg_int(args, "rcvbuf", &rcvbuf, &has_rcvbuf, f))
    return -1;
  if (!present) backlog = 16;
  if (has_rcvbuf) return fail(f, "unsupported", "%s", RCVBUF_WHY);
  if (backlog < 0) backlog = 0;
  struct in_addr host;
  if (host_addr_for(sa.sin_addr, &host, f)) return -1;
  int fd = host_socket(f);
  if (fd < 0) return -1;
  struct sockaddr_in hs = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = host};
  if (bind(fd, (struct sockaddr *)&hs, sizeof hs) < 0) { int e = errno; close(fd); return fail_errno(f, "bind", e); }
  if (listen(fd, (int)backlog) < 0) { int e = errno; close(fd); return fail_errno(f, "listen", e); }
  asock s = {.fd = fd, .listener = 1, .laddr = sa.sin_addr, .port = port, .slirp_fd = -1};
  int id = add_sock(&s, f);
  if (id < 0) return -1;
  sb_printf(r, "{\"sock\":%d,\"local\":", id);
  put_addr(r, sa.sin_addr, port);
  sb_puts(r, "}");
  return 0;
}

/* Drop a host connection whose slirp side is gone (its peer, slirp's socket, has closed). */
static void drop_pending(pending *p, const char *why) {
  logf_("accept", "host connection from loopback port %u dropped: %s", (unsigned)p->slirp_port, why);
  struct linger l = {1, 0};
  setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(p->fd);
  free(p);
}

static int op_accept(const jval *args, sbuf *r, failure *f) {
  asock l = {0};
  int lid;
  double timeout;
  if (need_stack(f) || get_sock(args, &l, &lid, f) || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f)) return -1;
  if (!l.listener) return fail(f, "EINVAL", "[Errno %d] accept: socket %d is not listening", EINVAL, lid);
  double deadline = deadline_in(timeout);
  pthread_mutex_lock(&slirp_lock);
  while (1) {
    /* Every host connection the kernel completed joins the listener's queue, in order. */
    pthread_mutex_lock(&socks_lock);
    if (socks[lid].fd != l.fd) {
      pthread_mutex_unlock(&socks_lock);
      pthread_mutex_unlock(&slirp_lock);
      return fail(f, "EBADF", "socket %d was closed during accept", lid);
    }
    pending **tail = &socks[lid].queue;
    while (*tail) tail = &(*tail)->next;
    int accept_errno = 0;
    while (1) {
      struct sockaddr_in peer;
      socklen_t len = sizeof peer;
      int c = accept4(l.fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) accept_errno = errno;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        break;
      }
      pending *p = calloc(1, sizeof *p);
      if (!p) { close(c); accept_errno = ENOMEM; break; }
      p->fd = c;
      p->slirp_port = ntohs(peer.sin_port);
      *tail = p;
      tail = &p->next;
    }
    pthread_mutex_unlock(&socks_lock);
    if (accept_errno) {
      pthread_mutex_unlock(&slirp_lock);
      return fail_errno(f, "accept", accept_errno);
    }
    /* The first of them whose slirp TCB is past the handshake is the one accept() returns. */
    row *rows = NULL;
    size_t n = 0;
    if (read_rows(&rows, &n)) {
      pthread_mutex_unlock(&slirp_lock);
      return fail(f, "ENOMEM", "cannot read slirp's connections");
    }
    pthread_mutex_lock(&socks_lock);
    pending **pp = &socks[lid].queue, *ready = NULL;
    row got = {0};
    while (*pp && !ready) {
      pending *p = *pp;
      const row *match = NULL;
      for (size_t i = 0; i < n && !match; i++)
        if (!rows[i].incoming && rows[i].fd >= 0 && rows[i].host_port == p->slirp_port) match = &rows[i];
      if (!match) {
        *pp = p->next;
        drop_pending(p, "slirp no longer has a connection for it");
        continue;
      }
      if (synchronized(match->state)) {
        *pp = p->next;
        ready = p;
        got = *match;
        break;
      }
      pp = &p->next;
    }
    pthread_mutex_unlock(&socks_lock);
    free(rows);
    if (ready) {
      pthread_mutex_unlock(&slirp_lock);
      asock s = {.fd = ready->fd, .listener = 0, .slirp_fd = got.fd, .slirp_gen = got.gen};
      free(ready);
      int id = add_sock(&s, f);
      if (id < 0) return -1;
      sb_printf(r, "{\"sock\":%d,\"peer\":", id);
      put_addr(r, got.raddr, got.rport);
      sb_puts(r, "}");
      return 0;
    }
    if (now_mono() >= deadline) {
      pthread_mutex_unlock(&slirp_lock);
      return fail(f, "timeout", "accept did not complete within %g s", timeout);
    }
    wait_round(deadline);
  }
}

/* Host forwards come from loopback ports the harness never uses (its ports are 20000-59999, the
 * kernel's ephemeral ones 32768 and up): one fresh forward per connect(), removed once it is done. */
#define FWD_LO 10000
#define FWD_HI 20000
static int next_fwd = FWD_LO;

static int add_forward(struct in_addr guest, uint16_t guest_port, failure *f) {
  for (int tries = 0; tries < FWD_HI - FWD_LO; tries++) {
    int port = next_fwd;
    next_fwd = next_fwd + 1 >= FWD_HI ? FWD_LO : next_fwd + 1;
    if (slirp_add_hostfwd(the_slirp, 0, loopback_addr, port, guest, guest_port) == 0) return port;
    if (errno != EADDRINUSE) return fail_errno(f, "slirp_add_hostfwd", errno);
  }
  return fail(f, "EADDRINUSE", "no free loopback port for a host forward");
}

static int op_connect(const jval *args, sbuf *r, failure *f) {
  struct sockaddr_in to, local;
  int present, has_bind_addr, has_bind_port, reuse;
  uint16_t port, bind_port = 0;
  double timeout;
  if (need_stack(f) || arg_addr(args, "addr", 1, &present, &to, f) || arg_port(args, "port", 1, &present, &port, f)
      || arg_addr(args, "bind_addr", 0, &has_bind_addr, &local, f)
      || arg_port(args, "bind_port", 0, &has_bind_port, &bind_port, f) || arg_bool(args, "reuseaddr", &reuse, 0, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  double deadline = deadline_in(timeout);
  struct in_addr host = loopback_addr;
  if (has_bind_addr && host_addr_for(local.sin_addr, &host, f)) return -1;
  if (host.s_addr == htonl(INADDR_ANY)) host = loopback_addr;
  int fd = host_socket(f);
  if (fd < 0) return -1;
  if (has_bind_addr || has_bind_port) {
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons(bind_port), .sin_addr = host};
    if (bind(fd, (struct sockaddr *)&b, sizeof b) < 0) { int e = errno; close(fd); return fail_errno(f, "bind", e); }
  }
  pthread_mutex_lock(&slirp_lock);
  int fwd = add_forward(to.sin_addr, port, f);
  pthread_mutex_unlock(&slirp_lock);
  wake_stack(); /* its poll does not watch the new forward yet */
  if (fwd < 0) { close(fd); return -1; }
  char peer_s[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &to.sin_addr, peer_s, sizeof peer_s);
  logf_("connect", "host forward 127.0.0.1:%d -> %s:%u", fwd, peer_s, (unsigned)port);

  const char *call = "connect";
  int e = 0, seen = 0;
  struct sockaddr_in hs = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fwd), .sin_addr = loopback_addr};
  if (connect(fd, (struct sockaddr *)&hs, sizeof hs) < 0) {
    if (errno != EINPROGRESS) { e = errno; goto fail_errno_out; }
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w < 0) { e = errno; call = "poll"; goto fail_errno_out; }
    if (w == 0) goto timed_out;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr) { e = soerr; goto fail_errno_out; }
  }
  struct sockaddr_in me;
  socklen_t mlen = sizeof me;
  if (getsockname(fd, (struct sockaddr *)&me, &mlen) < 0) { e = errno; call = "getsockname"; goto fail_errno_out; }
  uint16_t my_port = ntohs(me.sin_port);

  /* slirp accepts the host connection and sends its SYN; the call returns once its TCB is past
   * the handshake. */
  pthread_mutex_lock(&slirp_lock);
  row got = {0};
  int done = 0; /* 1 established, -1 dropped */
  while (!done) {
    row *rows = NULL;
    size_t n = 0;
    if (read_rows(&rows, &n) == 0) {
      const row *match = NULL;
      for (size_t i = 0; i < n && !match; i++)
        /* An old incarnation from the same bound port (TIME-WAIT) came through another forward. */
        if (rows[i].incoming && rows[i].fd >= 0 && rows[i].host_port == my_port && rows[i].fwd_port == fwd)
          match = &rows[i];
      if (match) {
        seen = 1;
        if (synchronized(match->state)) { got = *match; done = 1; }
      } else if (seen) {
        done = -1;
      }
      free(rows);
    }
    if (!done && !seen) {
      /* Never taken up by slirp but closed: a host forward that refused it. */
      char c;
      ssize_t k = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) done = -1;
    }
    if (done) break;
    if (now_mono() >= deadline) break;
    wait_round(deadline);
  }
  slirp_remove_hostfwd(the_slirp, 0, loopback_addr, fwd);
  pthread_mutex_unlock(&slirp_lock);
  if (done == 1) {
    asock s = {.fd = fd, .listener = 0, .slirp_fd = got.fd, .slirp_gen = got.gen};
    int id = add_sock(&s, f);
    if (id < 0) return -1;
    sb_printf(r, "{\"sock\":%d,\"local\":", id);
    put_addr(r, vhost_addr, my_port);
    sb_puts(r, "}");
    return 0;
  }
  close(fd);
  if (done == -1)
    return fail(f, "ECONNREFUSED", "[Errno %d] connect: slirp dropped the connection before it was established "
                "(a RST, or its connection-establishment timer); the host side sees only its socket closed",
                ECONNREFUSED);
  return fail(f, "timeout", "connect did not complete within %g s", timeout);

timed_out:
  pthread_mutex_lock(&slirp_lock);
  slirp_remove_hostfwd(the_slirp, 0, loopback_addr, fwd);
  pthread_mutex_unlock(&slirp_lock);
  close(fd);
  return fail(f, "timeout", "connect did not complete within %g s", timeout);
fail_errno_out:
  pthread_mutex_lock(&slirp_lock);
  slirp_remove_hostfwd(the_slirp, 0, loopback_addr, fwd);
  pthread_mutex_unlock(&slirp_lock);
  close(fd);
  return fail_errno(f, call, e);
}

static int op_send(const jval *args, sbuf *r, failure *f) {
  asock s = {0};
  const char *data64;
  double timeout;
  if (need_stack(f) || get_sock(args, &s, NULL, f) || arg_str(args, "data", &data64, 1, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  if (s.listener) return fail_errno(f, "send", ENOTCONN);
  unsigned char *data;
  size_t n, sent = 0;
  if (b64_decode(data64, strlen(data64), &data, &n)) return fail(f, "EBADMSG", "data is not base64");
  double deadline = deadline_in(timeout);
  /* Like a blocking send(): everything unless the deadline or an error comes first; a partial
   * count is reported rather than lost. */
  while (sent < n) {
    ssize_t k = send(s.fd, data + sent, n - sent, MSG_NOSIGNAL);
    if (k > 0) { sent += (size_t)k; continue; }
    int e = k < 0 ? errno : EIO;
    if (e == EINTR) continue;
    if (e == EWOULDBLOCK || e == EAGAIN) {
      int w = wait_fd(s.fd, POLLOUT, deadline);
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
  asock s = {0};
  int present;
  long long max = 65536;
  double timeout;
  if (need_stack(f) || get_sock(args, &s, NULL, f) || arg_int(args, "max", &max, &present, f)
      || arg_float(args, "timeout", &timeout, DEFAULT_TIMEOUT, f))
    return -1;
  if (s.listener) return fail_errno(f, "recv", ENOTCONN);
  if (!present) max = 65536;
  if (max <= 0) return fail(f, "EBADMSG", "max must be positive");
  if (max > (1 << 24)) max = 1 << 24;
  unsigned char *buf = malloc((size_t)max);
  if (!buf) return fail(f, "ENOMEM", "no memory for %lld bytes", max);
  double deadline = deadline_in(timeout);
  ssize_t k;
  while (1) {
    k = recv(s.fd, buf, (size_t)max, 0);
    if (k >= 0) break;
    int e = errno;
    if (e == EINTR) continue;
    if (e != EWOULDBLOCK && e != EAGAIN) { free(buf); return fail_errno(f, "recv", e); }
    int w = wait_fd(s.fd, POLLIN, deadline);
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
  asock s = {0};
  int how;
  const char *h;
  if (need_stack(f) || get_sock(args, &s, NULL, f) || arg_str(args, "how", &h, 1, f)) return -1;
  if (!strcmp(h, "rd")) how = SHUT_RD;
  else if (!strcmp(h, "wr")) how = SHUT_WR;
  else if (!strcmp(h, "rdwr")) how = SHUT_RDWR;
  else return fail(f, "EBADMSG", "how must be one of ['rd', 'rdwr', 'wr']");
  if (shutdown(s.fd, how) < 0) return fail_errno(f, "shutdown", errno);
  sb_puts(r, "{}");
  return 0;
}

/* close(): the host socket's close(), which slirp sees as the end of its stream (FIN) or, with
 * unread data or SO_LINGER {1, 0}, as a reset. A listener's queued connections are reset, as a
 * kernel resets the unaccepted connections of a listener it closes. */
static int op_close(const jval *args, sbuf *r, failure *f) {
  asock s = {0};
  if (need_stack(f) || take_sock(args, &s, f)) return -1;
  for (pending *p = s.queue, *next; p; p = next) {
    next = p->next;
    drop_pending(p, "its listener was closed");
  }
  if (close(s.fd) < 0) return fail_errno(f, "close", errno);
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
  asock s = {0};
  const sockopt *o;
  if (need_stack(f) || get_sock(args, &s, NULL, f) || get_opt(args, &o, f)) return -1;
  if (o->opt == SO_RCVBUF && o->level == SOL_SOCKET) return fail(f, "unsupported", "%s", RCVBUF_WHY);
  const jval *v = jget(args, "value");
  int rc;
  if (o->linger) {
    const jval *a = v && v->t == J_ARR ? v->child : NULL, *b = a ? a->next : NULL;
    if (!a || !b || b->next || a->t != J_NUM || !a->is_int || b->t != J_NUM || !b->is_int)
      return fail(f, "EBADMSG", "SO_LINGER value must be [onoff, secs]");
    struct linger l = {.l_onoff = (int)a->i, .l_linger = (int)b->i};
    rc = setsockopt(s.fd, o->level, o->opt, &l, sizeof l);
  } else {
    int val;
    if (v && v->t == J_BOOL) val = v->b;
    else if (v && v->t == J_NUM && v->is_int) val = (int)v->i;
    else return fail(f, "EBADMSG", "%s value must be an integer", o->name);
    rc = setsockopt(s.fd, o->level, o->opt, &val, sizeof val);
  }
  if (rc < 0) return fail_errno(f, "setsockopt", errno);
  sb_puts(r, "{}");
  return 0;
}

static int op_getsockopt(const jval *args, sbuf *r, failure *f) {
  asock s = {0};
  const sockopt *o;
  if (need_stack(f) || get_sock(args, &s, NULL, f) || get_opt(args, &o, f)) return -1;
  if (o->linger) {
    struct linger l = {0, 0};
    socklen_t len = sizeof l;
    if (getsockopt(s.fd, o->level, o->opt, &l, &len) < 0) return fail_errno(f, "getsockopt", errno);
    sb_printf(r, "{\"value\":[%d,%d]}", l.l_onoff, l.l_linger);
  } else {
    int val = 0;
    socklen_t len = sizeof val;
    if (getsockopt(s.fd, o->level, o->opt, &val, &len) < 0) return fail_errno(f, "getsockopt", errno);
    sb_printf(r, "{\"value\":%d}", val);
  }
  return 0;
}

/* A connection's state is its slirp TCB's, while slirp still has it (CLOSED after). */
static int op_state(const jval *args, sbuf *r, failure *f) {
  asock s = {0};
  if (need_stack(f) || get_sock(args, &s, NULL, f)) return -1;
  const char *state = "CLOSED";
  char buf[16];
  if (s.listener) {
    state = "LISTEN";
  } else {
    pthread_mutex_lock(&slirp_lock);
    row *rows = NULL;
    size_t n = 0;
    if (read_rows(&rows, &n)) {
      pthread_mutex_unlock(&slirp_lock);
      return fail(f, "ENOMEM", "cannot read slirp's connections");
    }
    for (size_t i = 0; i < n; i++)
      if (rows[i].fd == s.slirp_fd && rows[i].gen == s.slirp_gen) {
        snprintf(buf, sizeof buf, "%s", rows[i].state);
        state = buf;
        break;
      }
    free(rows);
    pthread_mutex_unlock(&slirp_lock);
  }
  sb_puts(r, "{\"state\":");
  sb_jcstr(r, state);
  sb_puts(r, "}");
  return 0;
}

static void put_conn(sbuf *r, int *first, struct in_addr la, uint16_t lp, struct in_addr ra, uint16_t rp,
                     const char *state) {
  sb_puts(r, *first ? "{\"local\":" : ",{\"local\":");
  *first = 0;
  put_addr(r, la, lp);
  sb_puts(r, ",\"remote\":");
  put_addr(r, ra, rp);
  sb_puts(r, ",\"state\":");
  sb_jcstr(r, state);
  sb_puts(r, "}");
}

/* Every TCB of slirp (TIME-WAIT included, which no socket refers to any more), and the agent's
 * listeners. */
static int op_conns(const jval *args, sbuf *r, failure *f) {
  long long lp = 0, rp = 0;
  int has_lp, has_rp;
  if (need_stack(f) || arg_int(args, "local_port", &lp, &has_lp, f) || arg_int(args, "remote_port", &rp, &has_rp, f))
    return -1;
  int first = 1;
  sb_puts(r, "{\"conns\":[");
  pthread_mutex_lock(&socks_lock);
  for (int i = 1; i < MAX_SOCKS; i++) {
    if (socks[i].fd <= 0 || !socks[i].listener) continue;
    if ((has_lp && socks[i].port != lp) || (has_rp && rp != 0)) continue;
    struct in_addr any = {htonl(INADDR_ANY)};
    put_conn(r, &first, socks[i].laddr, socks[i].port, any, 0, "LISTEN");
  }
  pthread_mutex_unlock(&socks_lock);
  pthread_mutex_lock(&slirp_lock);
  row *rows = NULL;
  size_t n = 0;
  int rc = read_rows(&rows, &n);
  pthread_mutex_unlock(&slirp_lock);
  if (rc) return fail(f, "ENOMEM", "cannot read slirp's connections");
  for (size_t i = 0; i < n; i++) {
    if ((has_lp && rows[i].lport != lp) || (has_rp && rows[i].rport != rp)) continue;
    put_conn(r, &first, rows[i].laddr, rows[i].lport, rows[i].raddr, rows[i].rport, rows[i].state);
  }
  free(rows);
  sb_puts(r, "]}");
  return 0;
}

static int op_sysctl(const jval *args, sbuf *r, failure *f) {
  (void)args;
  (void)r;
  return fail(f, "unsupported", "slirp has no settings of its own: its TCP is fixed at compile time");
}

typedef int (*op_fn)(const jval *, sbuf *, failure *);

static const struct {
  const char *name;
  op_fn fn;
} HANDLERS[] = {
  {"hello", op_hello}, {"listen", op_listen}, {"accept", op_accept}, {"connect", op_connect},
  {"send", op_send}, {"recv", op_recv}, {"shutdown", op_shutdown}, {"close", op_close},
  {"setsockopt", op_setsockopt}, {"getsockopt", op_getsockopt}, {"state", op_state},
  {"conns", op_conns}, {"sysctl", op_sysctl},
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
    logf_("ready", "pid %d %s %s listening on %s", (int)getpid(), STACK, slirp_version_string(), unix_path);
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
    logf_("ready", "pid %d %s %s on stdin/stdout", (int)getpid(), STACK, slirp_version_string());
    serve(0, out_fd);
  }
  log_line("exit", "bye");
  /* The stack thread never ends: leave without joining it. */
  _exit(0);
}
