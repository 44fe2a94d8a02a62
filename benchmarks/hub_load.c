/* Fan-out load for chat hubs (benchmarks/hub_tcp.py, hub_ws.py): N subscribers, one publisher.
 *
 * usage: hub_load fanout PROTO HOST PORT N SECONDS ROUNDS WINDOW HALF_SECONDS TOKEN
 *        hub_load hold   PROTO HOST PORT N TIMEOUT TOKEN
 *        hub_load floor  N BYTES ROUNDS
 * PORT may be FIRST+COUNT: connections are spread over COUNT consecutive listening ports.
 * PROTO: wirekit (JSON lines, /auth TOKEN; the token's user is already in #bench),
 *        irc (NICK/USER/JOIN #bench; the publisher OPERs as bench/benchpass and sets +F so that
 *        the server does not throttle it), raw (hold only: send "x", ready on any byte back),
 *        ws (docs/ws-protocol.md, RFC 6455 client: masked frames, no extension): subscribers
 *        open GET /ws?topic=bench, the publisher GET /ws?token=TOKEN; each is ready on its
 *        {"op":"hello"} frame; the publisher sends {"op":"pub","topic":"bench","data":TEXT} and
 *        gets {"op":"ok"}; subscribers get {"op":"msg",...,"data":TEXT,...}. Pings are answered.
 *
 * fanout: connects N subscribers and then the publisher, then
 *   1. max rate: the publisher keeps WINDOW messages outstanding (a message is complete once
 *      all N subscribers have it): 1 s warm-up, then ROUNDS intervals of SECONDS each;
 *   2. drains, then publishes open-loop at half the median max rate (paced by a timerfd) for
 *      0.5 s settle + HALF_SECONDS measured.
 * Each message's text carries "~T<seq>:<CLOCK_MONOTONIC ns>~", so every subscriber computes
 * publish-to-deliver latency. Markers ("ready", "max_begin", ...) go to stdout as they happen
 * so the driver can sample server CPU; the last stdout line is the result as JSON.
 *
 * hold: connects N clients, waits until each is logged in, prints "ready N", then keeps them
 * open (answering PINGs) until stdin closes or TIMEOUT seconds pass.
 *
 * floor: the kernel's share of one fan-out on this machine, with no server and no reader:
 * N loopback TCP connections to itself; each of ROUNDS rounds times one send() of BYTES to
 * each of the N accepted sockets (the receive side is drained between rounds, untimed). Prints
 * {"n":N,"bytes":BYTES,"us_per_send":[per round]} as JSON. No server can write one message to
 * N subscribers faster than N sends, so its last subscribers wait that long.
 *
 * One thread, epoll, non-blocking sockets: cheap enough to never be what a Python server waits
 * on. Every loop is bounded in time. Env: HUB_LOAD_VERBOSE=1 reports login progress on stderr;
 * HUB_LOAD_INFLIGHT caps logins in progress (default 1000). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { P_WIREKIT, P_IRC, P_RAW, P_WS };
enum { S_LOGIN, S_READY };
#define PART 8192            /* longest line kept across reads */
#define RBUF (256 * 1024)
#define RING (1 << 17)       /* completion counters, indexed by seq */
#define PACED_CAP 50000      /* open-loop: stop sending past this many incomplete messages */
#define TEXT_SIZE 64         /* bytes of message text (marker + padding) */
#define HIST_FINE 100000     /* 1 us buckets up to 100 ms */
#define HIST_COARSE 100000   /* then 100 us buckets up to ~10.1 s */
#define TAG_TIMER (1ull << 62)
#define TAG_STDIN (1ull << 61)

typedef struct {
    int fd, state, is_pub, plen, skipping, oper, moded, joined, heard, port;
    int upgraded;  /* ws: the 101 response has been read */
    char *part;
} conn_t;

static int proto, nconns, ep;
static conn_t *conns;
static const char *token = "-";
static struct sockaddr_in addr;
static long ready_count;
static long errors_seen;
static int inflight = 1000;  /* logins in progress at once (env HUB_LOAD_INFLIGHT) */
static int verbose;           /* env HUB_LOAD_VERBOSE: progress on stderr */
static long heard_count;     /* connections the server has said something on */
/* Connects not yet answered, per listening port: ngircd listens with a backlog of 10 and accepts
 * one connection per port per main-loop turn, so it is given several ports (PORT may be
 * "FIRST+COUNT") and the connects are spread over them. */
#define UNHEARD_MAX 8
#define MAX_PORTS 64
static int nports = 1, unheard[MAX_PORTS];
static char rbuf[PART + RBUF + 1];  /* + 1: room for a NUL after the last byte */

/* measurement state */
static uint64_t sent, done;      /* messages published; completed (all N have it), in order */
static uint32_t *ring;           /* deliveries per seq */
static long deliveries;          /* subscriber deliveries since the phase counters were reset */
static long pub_echoes;
static int recording;
static uint32_t *hist;
static long hist_n;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "hub_load: %s\n", what);
    exit(1);
}

static void hist_add(uint64_t ns) {
    uint64_t us = ns / 1000;
    size_t i = us < HIST_FINE ? us : HIST_FINE + (us - HIST_FINE) / 100;
    if (i >= HIST_FINE + HIST_COARSE) i = HIST_FINE + HIST_COARSE - 1;
    hist[i]++;
    hist_n++;
}

static double hist_pct(double p) { /* milliseconds */
    if (hist_n == 0) return -1;
    long want = (long)(p * hist_n);
    if (want >= hist_n) want = hist_n - 1;
    long seen = 0;
    for (size_t i = 0; i < HIST_FINE + HIST_COARSE; i++) {
        seen += hist[i];
        if (seen > want)
            return i < HIST_FINE ? (i + 0.5) / 1000.0 : (HIST_FINE + (i - HIST_FINE) * 100.0 + 50) / 1000.0;
    }
    return -1;
}

static void hist_reset(void) {
    memset(hist, 0, sizeof(uint32_t) * (HIST_FINE + HIST_COARSE));
    hist_n = 0;
}

static void send_all(conn_t *c, const char *data, size_t len) {
    /* Short control writes and publishes: the socket buffer of a loopback socket takes them;
     * wait briefly (bounded) if it is momentarily full. */
    uint64_t deadline = now_ns() + 5000000000ull;
    while (len > 0) {
        ssize_t w = write(c->fd, data, len);
        if (w > 0) { data += w; len -= (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (now_ns() > deadline) die("write stalled for 5 s");
            usleep(50);
            continue;
        }
        perror("write");
        exit(1);
    }
}

/* -- WebSocket client framing (RFC 6455) ------------------------------------------------------ */
static const uint8_t ws_mask[4] = {0x5a, 0x13, 0xc7, 0x2e};  /* any key will do */

/* A masked client frame (FIN set) of `len` payload bytes into out; returns its size. */
static size_t ws_frame(char *out, int opcode, const char *payload, size_t len) {
    uint8_t *o = (uint8_t *)out;
    size_t h = 0;
    o[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) o[h++] = (uint8_t)(0x80 | len);
    else if (len < 65536) { o[h++] = 0x80 | 126; o[h++] = (uint8_t)(len >> 8); o[h++] = (uint8_t)len; }
    else die("ws_frame: payload too long");
    memcpy(o + h, ws_mask, 4);
    h += 4;
    for (size_t k = 0; k < len; k++) o[h + k] = (uint8_t)payload[k] ^ ws_mask[k & 3];
    return h + len;
}

static void send_login(conn_t *c, int i) {
    char msg[1024];
    int n;
    if (proto == P_WS) {
        char host[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &addr.sin_addr, host, sizeof host);
        n = snprintf(msg, sizeof msg,
                     "GET /ws?%s%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     c->is_pub ? "token=" : "topic=bench", c->is_pub ? token : "", host,
                     ntohs(addr.sin_port));
    } else if (proto == P_WIREKIT) {
        n = snprintf(msg, sizeof msg, "/json\n/auth %s\n", token);
    } else if (proto == P_IRC) {
        if (c->is_pub)
            n = snprintf(msg, sizeof msg,
                         "NICK pub\r\nUSER pub 0 * :bench\r\nOPER bench benchpass\r\n");
        else
            n = snprintf(msg, sizeof msg, "NICK s%d\r\nUSER u%d 0 * :bench\r\nJOIN #bench\r\n", i, i);
    } else {
        n = snprintf(msg, sizeof msg, "x");
    }
    send_all(c, msg, (size_t)n);
}

static void open_conn(int i, int is_pub) {
    conn_t *c = &conns[i];
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) { perror("socket"); exit(1); }
    int port = 0;
    for (int k = 1; k < nports; k++)
        if (unheard[k] < unheard[port]) port = k;
    struct sockaddr_in to = addr;
    to.sin_port = htons((uint16_t)(ntohs(addr.sin_port) + port));
    if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); exit(1); }
    c->port = port;
    unheard[port]++;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->is_pub = is_pub;
    c->state = S_LOGIN;
    c->part = malloc(PART);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    send_login(c, i);
}

static void set_ready(conn_t *c) {
    if (c->state != S_READY) { c->state = S_READY; ready_count++; }
}

static void report_error(const char *line) {
    if (errors_seen++ < 5) fprintf(stderr, "hub_load: server said: %.300s\n", line);
}

static void delivered(const char *text) {
    const char *m = strstr(text, "~T");
    if (m == NULL) return;
    char *end;
    uint64_t seq = strtoull(m + 2, &end, 10);
    if (*end != ':') return;
    uint64_t ts = strtoull(end + 1, NULL, 10);
    uint64_t t = now_ns();
    deliveries++;
    if (recording && t >= ts) hist_add(t - ts);
    ring[seq & (RING - 1)]++;
    while (done < sent && ring[done & (RING - 1)] >= (uint32_t)nconns) {
        ring[done & (RING - 1)] = 0;
        done++;
    }
}

static void on_line(conn_t *c, char *line) {
    if (proto == P_WIREKIT) {
        if (strncmp(line, "{\"type\":\"msg\"", 13) == 0) {
            if (c->is_pub) pub_echoes++;
            else delivered(line);
        } else if (strstr(line, "\"type\":\"error\"")) {
            report_error(line);
            if (c->state != S_READY) die("login failed");
        } else if (c->state != S_READY && strstr(line, "\"cmd\":\"auth\"")) {
            set_ready(c);
        }
        return;
    }
    /* irc */
    if (strncmp(line, "PING ", 5) == 0) {
        char pong[600];
        int n = snprintf(pong, sizeof pong, "PONG %.500s\r\n", line + 5);
        send_all(c, pong, (size_t)n);
        return;
    }
    if (strncmp(line, "ERROR", 5) == 0) { report_error(line); die("IRC server closed us"); }
    char *sp = strchr(line, ' ');
    if (sp == NULL) return;
    if (strncmp(sp, " PRIVMSG #bench :", 17) == 0) {
        if (!c->is_pub) delivered(sp + 17);
        return;
    }
    if (c->state == S_READY) return;
    if (strncmp(sp, " 366 ", 5) == 0) c->joined = 1;                 /* end of NAMES: joined */
    else if (strncmp(sp, " 381 ", 5) == 0) {                          /* you are an operator */
        c->oper = 1;
        send_all(c, "MODE pub +F\r\nJOIN #bench\r\n", 26);
    } else if (strncmp(sp, " MODE pub ", 10) == 0 && strchr(sp + 10, 'F')) c->moded = 1;
    else if (sp[0] == ' ' && (sp[1] == '4' || sp[1] == '5') && sp[4] == ' ') report_error(line);
    if (c->joined && (!c->is_pub || (c->oper && c->moded))) set_ready(c);
}

/* One text frame's payload, NUL-terminated by the caller. */
#define STARTS(s, lit) (strncmp((s), (lit), sizeof(lit) - 1) == 0)
static void on_ws_text(conn_t *c, char *text) {
    if (STARTS(text, "{\"op\":\"msg\"")) {
        if (!c->is_pub) delivered(text);
    } else if (STARTS(text, "{\"op\":\"ok\"")) {
        pub_echoes++;  /* ws: the publisher's ok replies */
    } else if (STARTS(text, "{\"op\":\"hello\"")) {
        set_ready(c);
    } else if (STARTS(text, "{\"op\":\"error\"")) {
        report_error(text);
        if (c->state != S_READY) die("login failed");
    }
}

/* Frames in buf[0, len); returns how many bytes were consumed (the rest is a partial frame). */
static size_t ws_frames(conn_t *c, char *buf, size_t len) {
    size_t pos = 0;
    while (len - pos >= 2) {
        uint8_t *b = (uint8_t *)buf + pos;
        int opcode = b[0] & 0x0f;
        if (b[1] & 0x80) die("ws: the server sent a masked frame");
        uint64_t plen = b[1] & 0x7f;
        size_t h = 2;
        if (plen == 126) {
            if (len - pos < 4) break;
            plen = ((uint64_t)b[2] << 8) | b[3];
            h = 4;
        } else if (plen == 127) {
            if (len - pos < 10) break;
            plen = 0;
            for (int k = 0; k < 8; k++) plen = (plen << 8) | b[2 + k];
            h = 10;
        }
        if (h + plen > len - pos) {
            if (h + plen > PART) {  /* too long to keep: skip the rest of it */
                c->skipping = (int)(h + plen - (len - pos));
                return len;
            }
            break;
        }
        char *payload = buf + pos + h;
        if (opcode == 0x1 || opcode == 0x0) {
            char saved = payload[plen];
            payload[plen] = 0;
            on_ws_text(c, payload);
            payload[plen] = saved;
        } else if (opcode == 0x9) {
            char pong[256];
            send_all(c, pong, ws_frame(pong, 0xA, payload, plen < 125 ? plen : 125));
        } else if (opcode == 0x8) {
            int code = plen >= 2 ? ((uint8_t)payload[0] << 8) | (uint8_t)payload[1] : 0;
            fprintf(stderr, "hub_load: connection %ld closed by the server (WebSocket %d)\n",
                    (long)(c - conns), code);
            exit(1);
        }
        pos += h + plen;
    }
    return pos;
}

static void on_readable_ws(conn_t *c) {
    memcpy(rbuf, c->part, (size_t)c->plen);
    ssize_t r = read(c->fd, rbuf + c->plen, RBUF);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        fprintf(stderr, "hub_load: connection %ld closed by the server\n", (long)(c - conns));
        exit(1);
    }
    size_t len = (size_t)c->plen + (size_t)r, start = 0;
    if (c->skipping) {
        size_t skip = (size_t)c->skipping < len ? (size_t)c->skipping : len;
        c->skipping -= (int)skip;
        start = skip;
    }
    if (!c->upgraded) {
        rbuf[len] = 0;
        char *end = strstr(rbuf + start, "\r\n\r\n");
        if (end == NULL) {
            if (len - start > PART) die("ws: handshake response too long");
            memmove(c->part, rbuf + start, len - start);
            c->plen = (int)(len - start);
            return;
        }
        if (strncmp(rbuf + start, "HTTP/1.1 101", 12) != 0) {
            report_error(rbuf + start);
            die("ws: the upgrade was refused");
        }
        c->upgraded = 1;
        start = (size_t)(end + 4 - rbuf);
    }
    start += ws_frames(c, rbuf + start, len - start);
    size_t rest = start < len ? len - start : 0;
    memcpy(c->part, rbuf + start, rest);
    c->plen = (int)rest;
}

static void on_readable(int i) {
    conn_t *c = &conns[i];
    if (!c->heard) { c->heard = 1; heard_count++; unheard[c->port]--; }
    if (proto == P_WS) { on_readable_ws(c); return; }
    if (proto == P_RAW) {
        ssize_t r = read(c->fd, rbuf, RBUF);
        if (r <= 0) { fprintf(stderr, "connection %d closed\n", i); exit(1); }
        set_ready(c);
        return;
    }
    memcpy(rbuf, c->part, (size_t)c->plen);
    ssize_t r = read(c->fd, rbuf + c->plen, RBUF);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) { fprintf(stderr, "hub_load: connection %d closed by the server\n", i); exit(1); }
    size_t len = (size_t)c->plen + (size_t)r, start = 0;
    for (;;) {
        char *nl = memchr(rbuf + start, '\n', len - start);
        if (nl == NULL) break;
        size_t end = (size_t)(nl - rbuf);
        if (c->skipping) c->skipping = 0;
        else {
            rbuf[end] = 0;
            if (end > start && rbuf[end - 1] == '\r') rbuf[end - 1] = 0;
            on_line(c, rbuf + start);
        }
        start = end + 1;
    }
    size_t rest = len - start;
    if (rest > PART) { c->skipping = 1; rest = 0; }   /* over-long line: skip to its newline */
    memcpy(c->part, rbuf + start, rest);
    c->plen = (int)rest;
}

static void poll_once(int timeout_ms, void (*on_timer)(void), int *stdin_closed) {
    static struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, timeout_ms);
    for (int k = 0; k < n; k++) {
        uint64_t tag = evs[k].data.u64;
        if (tag == TAG_TIMER) { if (on_timer) on_timer(); continue; }
        if (tag == TAG_STDIN) {
            char b[64];
            if (read(0, b, sizeof b) <= 0 && stdin_closed) *stdin_closed = 1;
            continue;
        }
        on_readable((int)tag);
    }
}

/* Connect conns [from, to), at most `inflight` logins at once, until all are ready. */
static void connect_all(int from, int to, int is_pub, double timeout_s) {
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    long base = ready_count, target = base + (to - from);
    int next = from;
    uint64_t next_report = now_ns() + 2000000000ull;
    while (ready_count < target) {
        while (next < to && (next - from) - (ready_count - base) < inflight
               && next - heard_count < UNHEARD_MAX * nports)
            open_conn(next++, is_pub);
        poll_once(10, NULL, NULL);
        if (verbose && now_ns() > next_report) {
            fprintf(stderr, "hub_load: %d opened, %ld answered, %ld ready\n", next, heard_count,
                    ready_count);
            next_report = now_ns() + 2000000000ull;
        }
        if (now_ns() > deadline) {
            fprintf(stderr, "hub_load: only %ld of %ld logged in after %.0f s\n",
                    ready_count, target, timeout_s);
            exit(1);
        }
    }
}

/* -- publishing ---------------------------------------------------------------------------- */
static char pubbuf[1 << 20];
static int timer_fd = -1;
static uint64_t paced_skipped;

static size_t format_msg(char *out, uint64_t seq, uint64_t ts) {
    char text[TEXT_SIZE + 1];
    int n = snprintf(text, sizeof text, "~T%llu:%llu~", (unsigned long long)seq,
                     (unsigned long long)ts);
    while (n < TEXT_SIZE) text[n++] = 'x';
    text[n] = 0;
    if (proto == P_IRC) return (size_t)sprintf(out, "PRIVMSG #bench :%s\r\n", text);
    if (proto == P_WS) {
        char payload[TEXT_SIZE + 64];
        int len = snprintf(payload, sizeof payload,
                           "{\"op\":\"pub\",\"topic\":\"bench\",\"data\":\"%s\"}", text);
        return ws_frame(out, 0x1, payload, (size_t)len);
    }
    return (size_t)sprintf(out, "%s\n", text);
}

static void publish(uint64_t count) {
    conn_t *pub = &conns[nconns];
    size_t len = 0;
    uint64_t ts = now_ns();
    for (uint64_t k = 0; k < count; k++) {
        len += format_msg(pubbuf + len, sent++, ts);
        if (len > sizeof pubbuf - 256) { send_all(pub, pubbuf, len); len = 0; }
    }
    if (len) send_all(pub, pubbuf, len);
}

static uint64_t window;
static void pump_window(void) {
    if (sent - done < window) publish(window - (sent - done));
}

static void on_paced_tick(void) {
    uint64_t expirations = 0;
    if (read(timer_fd, &expirations, sizeof expirations) != sizeof expirations) return;
    if (sent - done > PACED_CAP) { paced_skipped += expirations; return; }
    publish(expirations);
}

static void json_hist(const char *key) {
    printf("\"%s\":{\"count\":%ld,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"max_ms\":%.3f}", key, hist_n, hist_pct(0.5), hist_pct(0.9),
           hist_pct(0.99), hist_pct(0.999), hist_pct(1.0));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void marker(const char *what) {
    printf("%s\n", what);
    fflush(stdout);
}

static int fanout(int n, double seconds, int rounds, int win, double half_seconds) {
    uint64_t t0 = now_ns();
    connect_all(0, n, 0, 180);
    connect_all(n, n + 1, 1, 30);
    double setup_s = (now_ns() - t0) / 1e9;
    marker("ready");
    /* let login/join chatter settle */
    for (uint64_t end = now_ns() + 300000000ull; now_ns() < end;) poll_once(10, NULL, NULL);

    window = (uint64_t)win;
    double *d_rate = calloc((size_t)rounds, sizeof(double)), *m_rate = calloc((size_t)rounds, sizeof(double));
    long *d_count = calloc((size_t)rounds, sizeof(long));
    uint64_t stall_ns = 5000000000ull;
    /* warm-up 1 s, then rounds */
    for (int r = -1; r < rounds; r++) {
        if (r == 0) { marker("max_begin"); recording = 1; }
        uint64_t start = now_ns(), end = start + (uint64_t)((r < 0 ? 1.0 : seconds) * 1e9);
        long d0 = deliveries;
        uint64_t done0 = done, last_done = done, last_progress = start;
        while (now_ns() < end) {
            pump_window();
            poll_once(1, NULL, NULL);
            if (done != last_done) { last_done = done; last_progress = now_ns(); }
            else if (now_ns() - last_progress > stall_ns) {
                fprintf(stderr, "hub_load: no message completed for 5 s (sent %llu, done %llu)\n",
                        (unsigned long long)sent, (unsigned long long)done);
                exit(1);
            }
        }
        double el = (now_ns() - start) / 1e9;
        if (r >= 0) {
            d_count[r] = deliveries - d0;
            d_rate[r] = (deliveries - d0) / el;
            m_rate[r] = (double)(done - done0) / el;
        }
    }
    recording = 0;
    marker("max_end");
    long max_hist_n = hist_n;
    double max_p50 = hist_pct(0.5), max_p99 = hist_pct(0.99);
    /* drain */
    for (uint64_t end = now_ns() + 10000000000ull; done < sent && now_ns() < end;)
        poll_once(5, NULL, NULL);
    if (done < sent) die("messages still incomplete 10 s after the max-rate phase");

    double *sorted = malloc(sizeof(double) * (size_t)rounds);
    memcpy(sorted, m_rate, sizeof(double) * (size_t)rounds);
    qsort(sorted, (size_t)rounds, sizeof(double), cmp_double);
    double max_msgs = sorted[rounds / 2];
    double half_rate = max_msgs / 2;
    if (half_rate < 1) half_rate = 1;

    /* paced half-rate phase */
    hist_reset();
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    uint64_t period = (uint64_t)(1e9 / half_rate);
    struct itimerspec its = {.it_interval = {(time_t)(period / 1000000000ull), (long)(period % 1000000000ull)},
                             .it_value = {0, 1000}};
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TAG_TIMER};
    epoll_ctl(ep, EPOLL_CTL_ADD, timer_fd, &tev);
    timerfd_settime(timer_fd, 0, &its, NULL);
    uint64_t settle_end = now_ns() + 500000000ull;
    while (now_ns() < settle_end) poll_once(5, on_paced_tick, NULL);
    marker("half_begin");
    recording = 1;
    long d0 = deliveries;
    uint64_t sent0 = sent, start = now_ns(), end = start + (uint64_t)(half_seconds * 1e9);
    while (now_ns() < end) poll_once(5, on_paced_tick, NULL);
    double el = (now_ns() - start) / 1e9;
    uint64_t half_sent = sent - sent0;
    struct itimerspec off = {0};
    timerfd_settime(timer_fd, 0, &off, NULL);
    /* the measured messages' deliveries still in flight count for latency */
    for (uint64_t stop = now_ns() + 10000000000ull; done < sent && now_ns() < stop;)
        poll_once(5, NULL, NULL);
    recording = 0;
    marker("half_end");
    long half_deliveries = deliveries - d0;

    printf("{\"n\":%d,\"window\":%d,\"setup_s\":%.3f,\"max\":{\"rounds\":[", n, win, setup_s);
    for (int r = 0; r < rounds; r++)
        printf("%s{\"deliveries\":%ld,\"deliveries_per_s\":%.1f,\"msgs_per_s\":%.1f}",
               r ? "," : "", d_count[r], d_rate[r], m_rate[r]);
    printf("],\"msgs_per_s_median\":%.1f,\"latency\":{\"count\":%ld,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f}},", max_msgs, max_hist_n, max_p50, max_p99);
    printf("\"half\":{\"target_msgs_per_s\":%.1f,\"msgs_per_s\":%.1f,\"deliveries_per_s\":%.1f,"
           "\"incomplete\":%llu,\"skipped\":%llu,", half_rate, half_sent / el,
           half_deliveries / el, (unsigned long long)(sent - done),
           (unsigned long long)paced_skipped);
    json_hist("latency");
    printf("},\"publisher_echoes\":%ld,\"server_errors\":%ld}\n", pub_echoes, errors_seen);
    fflush(stdout);
    return 0;
}

static int hold(int n, double timeout_s) {
    uint64_t t0 = now_ns();
    connect_all(0, n, 0, timeout_s);
    printf("ready %d %.3f\n", n, (now_ns() - t0) / 1e9);
    fflush(stdout);
    struct epoll_event sev = {.events = EPOLLIN, .data.u64 = TAG_STDIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
    int closed = 0;
    for (uint64_t end = t0 + (uint64_t)(timeout_s * 1e9); !closed && now_ns() < end;)
        poll_once(100, NULL, &closed);
    return 0;
}

static int floor_sends(int n, int bytes, int rounds) {
    if (n < 1 || bytes < 1 || bytes > RBUF || rounds < 1) die("floor: N >= 1, 1 <= BYTES <= 256 KiB, ROUNDS >= 1");
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0
        || getsockname(ls, (struct sockaddr *)&a, &alen) < 0) die("floor: listen");
    int *cli = calloc((size_t)n, sizeof(int)), *srv = calloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) {
        cli[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cli[i] < 0 || connect(cli[i], (struct sockaddr *)&a, sizeof a) < 0) die("floor: connect");
        if ((srv[i] = accept(ls, NULL, NULL)) < 0) die("floor: accept");
        int one = 1;
        setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    memset(rbuf, 'x', (size_t)bytes);
    printf("{\"n\":%d,\"bytes\":%d,\"us_per_send\":[", n, bytes);
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++)
            if (send(srv[i], rbuf, (size_t)bytes, 0) != bytes) die("floor: send");
        uint64_t t1 = now_ns();
        printf("%s%.3f", r ? "," : "", (double)(t1 - t0) / n / 1e3);
        for (int i = 0; i < n; i++)
            for (ssize_t got = 0; got < bytes;) {
                ssize_t k = recv(cli[i], rbuf + PART, (size_t)(bytes - got), 0);
                if (k <= 0) die("floor: recv");
                got += k;
            }
    }
    printf("]}\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "floor") == 0)
        return floor_sends(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc < 7) {
        fprintf(stderr, "usage: %s fanout PROTO HOST PORT N SECONDS ROUNDS WINDOW HALF_SECONDS TOKEN\n"
                        "       %s hold PROTO HOST PORT N TIMEOUT TOKEN\n"
                        "       %s floor N BYTES ROUNDS\n", argv[0], argv[0], argv[0]);
        return 2;
    }
    const char *mode = argv[1], *p = argv[2];
    proto = strcmp(p, "wirekit") == 0 ? P_WIREKIT : strcmp(p, "irc") == 0 ? P_IRC
          : strcmp(p, "raw") == 0 ? P_RAW : strcmp(p, "ws") == 0 ? P_WS : -1;
    if (proto < 0) die("PROTO is wirekit, irc, raw or ws");
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[4]));
    const char *plus = strchr(argv[4], '+');
    if (plus) nports = atoi(plus + 1);
    if (nports < 1 || nports > MAX_PORTS) die("PORT+COUNT: COUNT is 1 to 64");
    if (inet_pton(AF_INET, argv[3], &addr.sin_addr) != 1) die("bad HOST");
    int n = atoi(argv[5]);
    if (n < 1) die("N must be >= 1");
    ep = epoll_create1(0);
    verbose = getenv("HUB_LOAD_VERBOSE") != NULL;
    if (getenv("HUB_LOAD_INFLIGHT")) inflight = atoi(getenv("HUB_LOAD_INFLIGHT"));
    conns = calloc((size_t)n + 1, sizeof(conn_t));
    if (strcmp(mode, "fanout") == 0) {
        if (argc != 11) die("fanout takes 9 arguments");
        if (proto == P_RAW) die("fanout needs wirekit, irc or ws");
        token = argv[10];
        nconns = n;
        ring = calloc(RING, sizeof(uint32_t));
        hist = calloc(HIST_FINE + HIST_COARSE, sizeof(uint32_t));
        return fanout(n, atof(argv[6]), atoi(argv[7]), atoi(argv[8]), atof(argv[9]));
    }
    if (strcmp(mode, "hold") == 0) {
        if (argc != 8) die("hold takes 6 arguments");
        token = argv[7];
        nconns = n;
        return hold(n, atof(argv[6]));
    }
    die("mode is fanout or hold");
    return 2;
}
