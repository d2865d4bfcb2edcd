#ifndef CTLS_H
#define CTLS_H
// C over OpenSSL 3 (libssl) for what Swift cannot call directly or comfortably: the macros
// (SSL_CTX_set_min_proto_version, SSL_CTX_set_mode, SSL_CTX_set_tlsext_servername_callback, ...),
// the callbacks (SNI, ALPN, session-ticket keys) and OpenSSL's error queue. Every name is prefixed
// `ctls_`. Only ClusterTLS imports this module (scripts/check-kernel-door.sh).
//
// OpenSSL does its socket I/O itself on the connection's descriptor (a socket BIO, which kernel TLS
// needs); each call here is non-blocking and says what it waits for instead.
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ctls_server ctls_server;

/// Outcome codes of the connection calls (a count of bytes when positive).
enum {
    CTLS_DONE = 0,        // ctls_handshake: complete. ctls_read: the peer closed (close_notify or EOF).
    CTLS_WANT_READ = -1,  // wait for EPOLLIN, then call again
    CTLS_WANT_WRITE = -2, // wait for EPOLLOUT, then call again (with the same bytes, for a write)
    CTLS_FAILED = -3,     // the connection failed (protocol error, reset): close it
    CTLS_PLAIN_HTTP = -4, // ctls_handshake: the client sent a plain HTTP request (nginx answers 400)
};

/// Protocol versions for `min_version`.
enum { CTLS_TLS1_2 = 0x0303, CTLS_TLS1_3 = 0x0304 };

/// A listener's TLS: a default certificate (the first pair) and more chosen by SNI. `cipher_list`
/// (TLS 1.2, OpenSSL syntax) and `ciphersuites` (TLS 1.3) may be NULL for the defaults. `ktls`:
/// ask for kernel TLS (SSL_OP_ENABLE_KTLS; OpenSSL falls back to its own records where the kernel
/// has no `tls` module). NULL on failure with the reason in `error`.
ctls_server *ctls_server_new(int min_version, const char *cipher_list, const char *ciphersuites, int ktls,
                             char *error, size_t error_cap);
/// Adds a certificate chain (PEM: the leaf first) and its private key (PEM). The first pair is the
/// default. 0, or -1 with the reason in `error` (a key that does not match the certificate, ...).
int ctls_server_add(ctls_server *server, const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
                    char *error, size_t error_cap);
void ctls_server_free(ctls_server *server);
/// Facts of the `index`th pair's leaf certificate: validity as Unix seconds, the serial in hex, the
/// subject in one line. 0, or -1.
int ctls_server_leaf(ctls_server *server, int index, int64_t *not_before, int64_t *not_after, char *serial, size_t serial_cap,
                     char *subject, size_t subject_cap);

/// Session-ticket keys for every context of this process: `count` keys of 80 bytes each (16 name,
/// 32 AES-256-CBC, 32 HMAC-SHA256), the first one issues tickets, all are accepted. Until the first
/// call, a random key of this process's own issues them (resumable on this process only).
void ctls_set_ticket_keys(const uint8_t *keys, size_t count);

/// A server connection on the socket `fd` (non-blocking, accepted).
void *ctls_connection_new(ctls_server *server, int fd);
/// A client connection on `fd` (no certificate verification, ALPN `http/1.1`, SNI `server_name`
/// if not NULL), for tests: the same steps drive it. NULL on failure.
void *ctls_client_new(int fd, const char *server_name);
int ctls_handshake(void *ssl);
int ctls_read(void *ssl, void *buffer, int count);
int ctls_write(void *ssl, const void *bytes, int count);
/// SSL_sendfile (kernel TLS only): bytes sent, or a CTLS_ code.
long ctls_sendfile(void *ssl, int fd, off_t offset, size_t count);
/// Bytes decrypted and not yet read (SSL_has_pending).
int ctls_has_pending(void *ssl);
/// Sends close_notify unless the connection failed (one try: the socket may be full).
void ctls_close_notify(void *ssl);
void ctls_connection_free(void *ssl);
/// Kernel TLS is on for sending (1) / receiving (2) on this connection (a bit set).
int ctls_kernel_offload(void *ssl);
/// The session was resumed from a ticket.
int ctls_session_reused(void *ssl);
/// "TLSv1.3" etc.
const char *ctls_version(void *ssl);
/// ALPN selected `http/1.1`.
int ctls_alpn_is_http11(void *ssl);
/// The peer certificate's serial in hex ("" without one).
void ctls_peer_serial(void *ssl, char *serial, size_t cap);
/// The last error of this thread's OpenSSL error queue as text (empties it).
void ctls_last_error(char *error, size_t error_cap);
#endif
