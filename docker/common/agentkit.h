/*
 * What every C agent shares (docs/agent-protocol.md): the log, reply buffers, a small bounded
 * JSON parser, failures and errno names, argument checks and base64. Included once, after the
 * agent's own headers and its STACK ("lwip") and STACK_LABEL ("lwIP", for messages) defines;
 * agentloop.h, at the agent's end, is the request loop. Header-only, as each agent is one
 * translation unit compiled by its docker/<target>/prepare.
 */
#ifndef SYNFIN_AGENTKIT_H
#define SYNFIN_AGENTKIT_H

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
  if (strchr(s, ':')) return fail(f, "EAFNOSUPPORT", STACK_LABEL " target: only IPv4 is used in the lab (%s)", s);
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

#endif
