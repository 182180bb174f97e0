/*
 * What every C agent shares after its operations: run_op (one reply), the background jobs of
 * start/wait, the request loop and main(). Included once, at the agent's end, after it defined
 * find_op() (its operations), settle() (the stack has worked through its input) and op_hello,
 * and STACK_VERSION (the stack's version string, as an expression).
 */
#ifndef SYNFIN_AGENTLOOP_H
#define SYNFIN_AGENTLOOP_H

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
    logf_("ready", "pid %d %s %s listening on %s", (int)getpid(), STACK, STACK_VERSION, unix_path);
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
    logf_("ready", "pid %d %s %s on stdin/stdout", (int)getpid(), STACK, STACK_VERSION);
    serve(0, out_fd);
  }
  log_line("exit", "bye");
  /* The stack's threads never end: leave without joining them. */
  _exit(0);
}

#endif
