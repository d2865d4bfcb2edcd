/* Shared by the two floor servers (Bench/floor/epoll.c, Bench/floor/uring.c): the canned answer and
 * the request counter. A floor, not a server: no HTTP parsing beyond finding each request's end
 * ("\r\n\r\n"), every request gets the same answer, bodies are not supported.
 *
 * The answer has the same headers as clusterd's configured route (Server, Content-Type,
 * Content-Length, Date), byte for byte the same length as clusterd's "Server: clusterd": Date is
 * rewritten at most once a second. Output owed to a connection is a byte count into `big`, a run of
 * RESP_COPIES copies of the answer: any number of answers is sent from there, in one write when it
 * fits, without building anything per request. */
#include <stdint.h>
#include <string.h>
#include <time.h>

#define RESP_COPIES 512
static char resp[160];
static size_t resp_len;
static char big[RESP_COPIES * 160];
static size_t big_len;
static time_t resp_time;

static void refresh_response(void) {
    time_t now = time(NULL);
    if (now == resp_time) return;
    resp_time = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    resp_len = (size_t)snprintf(resp, sizeof resp,
        "HTTP/1.1 200 OK\r\nServer: floorsrv\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        "Date: %s\r\n\r\nHello world!", date);
    for (int i = 0; i < RESP_COPIES; i++) memcpy(big + i * resp_len, resp, resp_len);
    big_len = RESP_COPIES * resp_len;
}

/* A connection's output: `owed` bytes of the answer stream not yet written, the stream now at
 * offset `pos` within one answer (a short write leaves it mid-answer). The bytes to write next
 * start at big + pos; at most big_len - pos of them in one call. */
struct out { uint64_t owed; uint32_t pos; };

static inline size_t out_chunk(const struct out *o) {
    size_t room = big_len - o->pos;
    return o->owed < room ? (size_t)o->owed : room;
}

static inline void out_done(struct out *o, size_t n) {
    o->owed -= n;
    o->pos = (uint32_t)((o->pos + n) % resp_len);
}

/* Counts complete requests ("\r\n\r\n") in p[0..n), carrying an unfinished terminator across reads:
 * `tail` keeps up to 3 bytes after the last complete request (that is all of a partial request that
 * matters to this floor). */
struct reqscan { char tail[3]; uint8_t tail_len; };

static unsigned count_requests(struct reqscan *s, const char *p, size_t n) {
    unsigned count = 0;
    size_t start = 0;
    if (s->tail_len) {
        char w[6];
        size_t head = n < 3 ? n : 3;
        memcpy(w, s->tail, s->tail_len);
        memcpy(w + s->tail_len, p, head);
        const char *m = memmem(w, s->tail_len + head, "\r\n\r\n", 4);
        if (m) { count++; start = (size_t)(m - w) + 4 - s->tail_len; }
    }
    const char *q = p + start, *end = p + n;
    const char *m;
    while ((m = memmem(q, (size_t)(end - q), "\r\n\r\n", 4)) != NULL) { count++; q = m + 4; }
    size_t left = (size_t)(end - q);
    if (left >= 3) {
        memcpy(s->tail, end - 3, 3); s->tail_len = 3;
    } else if (q == p && count == 0) {  /* a short read that ends no request: keep the old tail too */
        char w[6];
        size_t k = s->tail_len + left;
        memcpy(w, s->tail, s->tail_len);
        memcpy(w + s->tail_len, q, left);
        size_t keep = k < 3 ? k : 3;
        memcpy(s->tail, w + k - keep, keep); s->tail_len = (uint8_t)keep;
    } else {
        memcpy(s->tail, q, left); s->tail_len = (uint8_t)left;
    }
    return count;
}
