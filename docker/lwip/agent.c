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
#define STACK_LABEL "lwIP"
#define STACK_VERSION LWIP_VERSION_STRING

#include "agentkit.h"

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

#include "agentloop.h"
