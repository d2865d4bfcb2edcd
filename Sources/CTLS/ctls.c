#include "CTLS.h"
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/bn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// The most certificates one listener may carry (the default plus those chosen by SNI).
#define CTLS_MAX_PAIRS 64

struct ctls_server {
    SSL_CTX *contexts[CTLS_MAX_PAIRS];
    int count;
    int min_version;
    char *cipher_list;
    char *ciphersuites;
    int ktls;
};

static void copy_error(char *error, size_t cap, const char *prefix) {
    if (!error || cap == 0) return;
    unsigned long e = ERR_get_error();
    unsigned long last = e;
    while (e != 0) { last = e; e = ERR_get_error(); }  // the last is the most specific
    if (last == 0) {
        snprintf(error, cap, "%s", prefix);
        return;
    }
    char reason[256];
    const char *r = ERR_reason_error_string(last);
    if (r) snprintf(reason, sizeof reason, "%s", r);
    else ERR_error_string_n(last, reason, sizeof reason);
    snprintf(error, cap, "%s: %s", prefix, reason);
}

void ctls_last_error(char *error, size_t error_cap) { copy_error(error, error_cap, "TLS"); }

// MARK: - Session tickets

#define TICKET_KEY_BYTES 80
#define TICKET_KEYS_MAX 4
static uint8_t ticket_keys[TICKET_KEYS_MAX][TICKET_KEY_BYTES];
static size_t ticket_key_count = 0;

void ctls_set_ticket_keys(const uint8_t *keys, size_t count) {
    if (count > TICKET_KEYS_MAX) count = TICKET_KEYS_MAX;
    memcpy(ticket_keys, keys, count * TICKET_KEY_BYTES);
    ticket_key_count = count;
}

static int init_mac(EVP_MAC_CTX *hctx, const uint8_t *key) {
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(hctx, key, 32, params);
}

// SSL_CTX_set_tlsext_ticket_key_evp_cb: key name (16 bytes), IV, cipher and MAC contexts.
static int ticket_callback(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                           int encrypt) {
    (void)ssl;
    if (encrypt) {
        if (ticket_key_count == 0) {
            // No keys from the master yet (the first moments of a worker): a key of this process's
            // own, replaced when the master's arrive. Not "no ticket" (return 0): OpenSSL 3.0 then
            // sends an empty TLS 1.3 ticket, which RFC 8446 does not allow.
            if (RAND_bytes(ticket_keys[0], TICKET_KEY_BYTES) <= 0) return -1;
            ticket_key_count = 1;
        }
        const uint8_t *key = ticket_keys[0];
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) <= 0) return -1;
        memcpy(name, key, 16);
        if (!EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key + 16, iv)) return -1;
        if (!init_mac(hctx, key + 48)) return -1;
        return 1;
    }
    for (size_t i = 0; i < ticket_key_count; i++) {
        const uint8_t *key = ticket_keys[i];
        if (memcmp(name, key, 16) != 0) continue;
        if (!EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key + 16, iv)) return -1;
        if (!init_mac(hctx, key + 48)) return -1;
        // 2: accepted, and a new ticket is issued (under the current key). Always, not only for an
        // older key: a TLS 1.3 client uses a ticket once (RFC 8446 C.4; OpenSSL's client drops
        // it), so without a new one its next connection would be a full handshake.
        return 2;
    }
    return 0;  // unknown key (rotated out, another server's): a full handshake
}

// MARK: - Contexts

static int alpn_callback(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                         unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, outlen, ours, sizeof ours - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;  // a client offering only other protocols goes on without ALPN
}

// SNI: the first extra certificate whose names (SAN, else CN) match the name asked for; the default
// otherwise (as nginx does with its default server).
static int servername_callback(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    ctls_server *server = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || server->count < 2) return SSL_TLSEXT_ERR_OK;
    for (int i = 1; i < server->count; i++) {
        X509 *cert = SSL_CTX_get0_certificate(server->contexts[i]);
        if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, server->contexts[i]);
            return SSL_TLSEXT_ERR_OK;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *make_context(ctls_server *server, char *error, size_t cap) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { copy_error(error, cap, "SSL_CTX_new"); return NULL; }
    if (!SSL_CTX_set_min_proto_version(ctx, server->min_version)) { copy_error(error, cap, "minVersion"); goto fail; }
    uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE;
    if (server->ktls) options |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx, options);
    // Writes like write(2): part of the bytes, and a retry may come from where they moved to.
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    // Resumption by tickets only (the keys are the master's, shared by every worker): no
    // per-process session cache, which another worker could not see.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    static const unsigned char context_id[] = "clusterd";
    SSL_CTX_set_session_id_context(ctx, context_id, sizeof context_id - 1);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback) != 1) { copy_error(error, cap, "session tickets"); goto fail; }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_callback, NULL);
    if (server->cipher_list && SSL_CTX_set_cipher_list(ctx, server->cipher_list) != 1) {
        copy_error(error, cap, "ciphers (TLS 1.2): no cipher in the list is known");
        goto fail;
    }
    if (server->ciphersuites && SSL_CTX_set_ciphersuites(ctx, server->ciphersuites) != 1) {
        copy_error(error, cap, "ciphersuites (TLS 1.3): no suite in the list is known");
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

ctls_server *ctls_server_new(int min_version, const char *cipher_list, const char *ciphersuites, int ktls, char *error,
                             size_t error_cap) {
    ERR_clear_error();
    ctls_server *server = calloc(1, sizeof *server);
    if (!server) { snprintf(error, error_cap, "out of memory"); return NULL; }
    server->min_version = min_version;
    server->ktls = ktls;
    if (cipher_list) server->cipher_list = strdup(cipher_list);
    if (ciphersuites) server->ciphersuites = strdup(ciphersuites);
    // Checked now, on a context of its own, so that a bad cipher list is named before any file.
    SSL_CTX *probe = make_context(server, error, error_cap);
    if (!probe) { ctls_server_free(server); return NULL; }
    SSL_CTX_free(probe);
    return server;
}

int ctls_server_add(ctls_server *server, const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
                    char *error, size_t error_cap) {
    ERR_clear_error();
    if (server->count >= CTLS_MAX_PAIRS) { snprintf(error, error_cap, "at most %d certificates per listener", CTLS_MAX_PAIRS); return -1; }
    SSL_CTX *ctx = make_context(server, error, error_cap);
    if (!ctx) return -1;
    BIO *bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
    X509 *leaf = bio ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
    if (!leaf) { copy_error(error, error_cap, "certificate: no PEM certificate in the file"); goto fail; }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) { copy_error(error, error_cap, "certificate"); X509_free(leaf); goto fail; }
    X509_free(leaf);
    // The rest of the file: the chain, in order.
    X509 *ca;
    while ((ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) { X509_free(ca); copy_error(error, error_cap, "certificate chain"); goto fail; }
    }
    ERR_clear_error();  // the end of the file reads as "no start line"
    BIO_free(bio);
    bio = BIO_new_mem_buf(key_pem, (int)key_len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    if (!key) { copy_error(error, error_cap, "key: no PEM private key in the file (an encrypted key is not supported)"); goto fail; }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        EVP_PKEY_free(key);
        copy_error(error, error_cap, "key does not match the certificate");
        goto fail;
    }
    EVP_PKEY_free(key);
    if (SSL_CTX_check_private_key(ctx) != 1) { copy_error(error, error_cap, "key does not match the certificate"); goto fail; }
    BIO_free(bio);
    server->contexts[server->count++] = ctx;
    if (server->count == 1) {
        SSL_CTX_set_tlsext_servername_callback(ctx, servername_callback);
        SSL_CTX_set_tlsext_servername_arg(ctx, server);
    }
    return 0;
fail:
    BIO_free(bio);
    SSL_CTX_free(ctx);
    return -1;
}

void ctls_server_free(ctls_server *server) {
    if (!server) return;
    for (int i = 0; i < server->count; i++) SSL_CTX_free(server->contexts[i]);
    free(server->cipher_list);
    free(server->ciphersuites);
    free(server);
}

static int64_t asn1_seconds(const ASN1_TIME *t) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return (int64_t)timegm(&tm);
}

int ctls_server_leaf(ctls_server *server, int index, int64_t *not_before, int64_t *not_after, char *serial, size_t serial_cap,
                     char *subject, size_t subject_cap) {
    if (index < 0 || index >= server->count) return -1;
    X509 *cert = SSL_CTX_get0_certificate(server->contexts[index]);
    if (!cert) return -1;
    *not_before = asn1_seconds(X509_get0_notBefore(cert));
    *not_after = asn1_seconds(X509_get0_notAfter(cert));
    if (serial_cap > 0) {
        serial[0] = 0;
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (hex) snprintf(serial, serial_cap, "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
    }
    if (subject_cap > 0) {
        subject[0] = 0;
        X509_NAME_oneline(X509_get_subject_name(cert), subject, (int)subject_cap);
    }
    return 0;
}

// MARK: - Connections

void *ctls_connection_new(ctls_server *server, int fd) {
    if (!server || server->count == 0) return NULL;
    SSL *ssl = SSL_new(server->contexts[0]);
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); ERR_clear_error(); return NULL; }
    SSL_set_accept_state(ssl);
    return ssl;
}

void *ctls_client_new(int fd, const char *server_name) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { ERR_clear_error(); return NULL; }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);  // the connection holds its own reference
    if (!ssl) { ERR_clear_error(); return NULL; }
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); ERR_clear_error(); return NULL; }
    if (server_name) SSL_set_tlsext_host_name(ssl, server_name);
    SSL_set_connect_state(ssl);
    return ssl;
}

int ctls_alpn_is_http11(void *p) {
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected((SSL *)p, &proto, &len);
    return len == 8 && memcmp(proto, "http/1.1", 8) == 0;
}

void ctls_peer_serial(void *p, char *serial, size_t cap) {
    if (cap == 0) return;
    serial[0] = 0;
    X509 *cert = SSL_get1_peer_certificate((SSL *)p);
    if (!cert) return;
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    if (hex) snprintf(serial, cap, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(cert);
}

// What SSL_get_error says, as a CTLS_ code; a failed connection sends no close_notify.
static int outcome(SSL *ssl, int r) {
    switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ: return CTLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return CTLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return CTLS_DONE;
    default:
        SSL_set_quiet_shutdown(ssl, 1);
        ERR_clear_error();
        return CTLS_FAILED;
    }
}

int ctls_handshake(void *p) {
    SSL *ssl = p;
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1) return CTLS_DONE;
    if (SSL_get_error(ssl, r) == SSL_ERROR_SSL) {
        // OpenSSL recognises "GET ", "POST", "HEAD", "PUT " where a ClientHello belongs.
        unsigned long e = ERR_peek_error();
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST) {
            SSL_set_quiet_shutdown(ssl, 1);
            ERR_clear_error();
            return CTLS_PLAIN_HTTP;
        }
    }
    int o = outcome(ssl, r);
    return o == CTLS_DONE ? CTLS_FAILED : o;
}

int ctls_read(void *p, void *buffer, int count) {
    SSL *ssl = p;
    ERR_clear_error();
    int r = SSL_read(ssl, buffer, count);
    if (r > 0) return r;
    // EOF without close_notify (SSL_ERROR_SSL "unexpected eof") is a close too: HTTP/1.1 frames
    // its own messages, so a truncation is seen as an incomplete request, as on a plain socket.
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        SSL_set_quiet_shutdown(ssl, 1);
        ERR_clear_error();
        return CTLS_DONE;
    }
    return outcome(ssl, r);
}

int ctls_write(void *p, const void *bytes, int count) {
    SSL *ssl = p;
    ERR_clear_error();
    int r = SSL_write(ssl, bytes, count);
    if (r > 0) return r;
    int o = outcome(ssl, r);
    return o == CTLS_DONE ? CTLS_FAILED : o;
}

long ctls_sendfile(void *p, int fd, off_t offset, size_t count) {
    SSL *ssl = p;
    ERR_clear_error();
    ossl_ssize_t r = SSL_sendfile(ssl, fd, offset, count, 0);
    if (r > 0) return (long)r;
    // SSL_sendfile sets no SSL error on EAGAIN; it leaves errno and BIO retry flags.
    if (BIO_should_retry(SSL_get_wbio(ssl))) { ERR_clear_error(); return CTLS_WANT_WRITE; }
    int o = outcome(ssl, (int)r);
    return o == CTLS_DONE ? CTLS_FAILED : o;
}

int ctls_has_pending(void *p) { return SSL_has_pending((SSL *)p); }

void ctls_close_notify(void *p) {
    SSL *ssl = p;
    if (SSL_in_init(ssl) || SSL_get_quiet_shutdown(ssl)) return;
    if (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
}

void ctls_connection_free(void *p) { SSL_free((SSL *)p); }

int ctls_kernel_offload(void *p) {
    SSL *ssl = p;
    int bits = 0;
    if (BIO_get_ktls_send(SSL_get_wbio(ssl))) bits |= 1;
    if (BIO_get_ktls_recv(SSL_get_rbio(ssl))) bits |= 2;
    return bits;
}

int ctls_session_reused(void *p) { return SSL_session_reused((SSL *)p); }

const char *ctls_version(void *p) { return SSL_get_version((SSL *)p); }
