"""TLS and the bearer token of a client's channels (docs/security.md).

Every client of the package (dcasgd.Client, DataCoordinatorClient, the health
and reflection helpers, `python3 -m dcasgd`) takes the same keyword
arguments, each defaulting to the environment variable the C++ worker reads:

    token            the bearer token itself
    token_file       a file holding it (DCASGD_AUTH_TOKEN_FILE)
    tls_ca           CA bundle (PEM) that signed the shards' certificates:
                     set, the channels use TLS (DCASGD_TLS_CA)
    tls_cert/tls_key client certificate and key, for shards that require
                     mutual TLS (DCASGD_TLS_CERT, DCASGD_TLS_KEY)
    tls_server_name  name to verify in the shards' certificates instead of
                     each address's host (DCASGD_TLS_SERVER_NAME)

Without any of them a channel is plaintext and anonymous, as a local shard
without authentication expects. The token goes with every call as
`authorization: Bearer <token>`, over TLS or not. Files are read once, when
the credentials are made.
"""

import collections
import os

import grpc

ENV = {
    "token_file": "DCASGD_AUTH_TOKEN_FILE",
    "tls_ca": "DCASGD_TLS_CA",
    "tls_cert": "DCASGD_TLS_CERT",
    "tls_key": "DCASGD_TLS_KEY",
    "tls_server_name": "DCASGD_TLS_SERVER_NAME",
}
_MIN_TOKEN, _MAX_TOKEN = 16, 512


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ValueError("%s '%s': %s" % (what, path, error.strerror)) from None


def _check_token(token, where):
    if not _MIN_TOKEN <= len(token) <= _MAX_TOKEN:
        raise ValueError("%s: a token has %d to %d characters, not %d" %
                         (where, _MIN_TOKEN, _MAX_TOKEN, len(token)))
    if any(not 0x21 <= ord(c) <= 0x7e for c in token):
        raise ValueError("%s: a token may hold only visible ASCII characters" % where)
    return token


class Credentials:
    """What a client connects with; immutable after construction.

    Raises ValueError naming the file or argument for an unreadable file, a
    malformed token, a client certificate without its key, or client TLS
    files without tls_ca.
    """

    def __init__(self, token=None, token_file=None, tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None, env=None):
        env = os.environ if env is None else env
        given = dict(token_file=token_file, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                     tls_server_name=tls_server_name)
        for name, variable in ENV.items():
            if given[name] is None:
                given[name] = env.get(variable) or None
        self.token = None
        if token is not None:
            self.token = _check_token(token, "token")
        elif given["token_file"]:
            text = _read(given["token_file"], "token file").decode("utf-8", "replace")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if not lines:
                raise ValueError("token file '%s' holds no token" % given["token_file"])
            self.token = _check_token(lines[0], "token file '%s'" % given["token_file"])
        self.server_name = given["tls_server_name"]
        self._ssl = None
        if not given["tls_ca"]:
            if given["tls_cert"] or given["tls_key"] or self.server_name:
                raise ValueError("tls_cert, tls_key and tls_server_name need tls_ca (the CA "
                                 "that signed the shards' certificates)")
            return
        if bool(given["tls_cert"]) != bool(given["tls_key"]):
            raise ValueError("a client certificate needs both tls_cert and tls_key")
        self._ssl = grpc.ssl_channel_credentials(
            root_certificates=_read(given["tls_ca"], "tls_ca"),
            private_key=_read(given["tls_key"], "tls_key") if given["tls_key"] else None,
            certificate_chain=_read(given["tls_cert"], "tls_cert") if given["tls_cert"] else None)

    @property
    def tls(self):
        """True when the channels use TLS."""
        return self._ssl is not None

    def channel(self, address, options=()):
        """A channel to `address` with these credentials."""
        options = list(options)
        if self._ssl is not None:
            if self.server_name:
                options.append(("grpc.ssl_target_name_override", self.server_name))
            channel = grpc.secure_channel(address, self._ssl, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        if self.token is None:
            return channel
        return grpc.intercept_channel(channel, _BearerToken(self.token))


def credentials_from(credentials=None, **security):
    """`credentials` when given, else Credentials(**security)."""
    if credentials is not None:
        if any(v is not None for v in security.values()):
            raise ValueError("give either credentials= or the token/tls_* arguments, not both")
        return credentials
    return Credentials(**security)


class _CallDetails(
        collections.namedtuple("_CallDetails", ["method", "timeout", "metadata", "credentials",
                                                "wait_for_ready", "compression"]),
        grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token):
        self._header = ("authorization", "Bearer " + token)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)
