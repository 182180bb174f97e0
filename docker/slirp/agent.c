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
#define STACK_LABEL "slirp"
#define STACK_VERSION slirp_version_string()

#include "agentkit.h"

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

#include "agentloop.h"
