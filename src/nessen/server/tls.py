"""TLS on the server's own socket: the server-side ``ssl.SSLContext`` built from the settings.

For in-pod TLS, a cluster without a service mesh, or a VM without a proxy in front. The
context is the ``ssl`` module's server default (its cipher list, no TLS compression) with
TLS 1.2 at least (RFC 8996 deprecates 1.0 and 1.1) and ALPN ``http/1.1`` (RFC 7301: the one
protocol spoken here). Client certificates (mutual TLS) are asked for with
``SSL_CERT_REQS`` and checked against ``SSL_CA_CERTS``.
"""

from __future__ import annotations

import os
import ssl

from nessen.config import Config
from nessen.errors import ConfigError

VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
"""``SSL_CERT_REQS`` values and what the context does with a client certificate."""


def server_context(config: Config) -> ssl.SSLContext | None:
    """Build the server's TLS context from ``config``, or ``None`` when TLS is off.

    TLS is on when ``config.ssl_certfile`` is set. The files are read now, once: a new
    context (:func:`server_context` again) is how a renewed certificate is taken up.

    Raises:
        ConfigError: A file cannot be read, is not PEM, or the key does not match the
            certificate or needs another password; the problem names the variable
            (``SSL_CERTFILE``, ``SSL_KEYFILE``, ``SSL_KEYFILE_PASSWORD``, ``SSL_CA_CERTS``).
    """
    if config.ssl_certfile is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    names = "SSL_CERTFILE" + (" and SSL_KEYFILE" if config.ssl_keyfile else "")
    for name, path in (("SSL_CERTFILE", config.ssl_certfile), ("SSL_KEYFILE", config.ssl_keyfile)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError([f"{name}: {path!r} does not exist or is not a file"])
    password = config.ssl_keyfile_password
    try:
        context.load_cert_chain(
            config.ssl_certfile,
            config.ssl_keyfile,
            # Without one, an encrypted key would make OpenSSL prompt on the terminal.
            password=password if password is not None else _no_password,
        )
    except _PasswordNeeded:
        raise ConfigError(
            [f"{names}: the private key is encrypted; set SSL_KEYFILE_PASSWORD"]
        ) from None
    except PermissionError as exc:
        raise ConfigError([f"{names}: {exc.filename!r} cannot be read (permission)"]) from None
    except ssl.SSLError as exc:
        raise ConfigError([f"{names}: {_why(exc, config)}"]) from None
    except OSError as exc:
        raise ConfigError([f"{names}: cannot be read: {exc}"]) from None
    context.verify_mode = VERIFY_MODES[config.ssl_cert_reqs]
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except FileNotFoundError:
            raise ConfigError([f"SSL_CA_CERTS: {config.ssl_ca_certs!r} does not exist"]) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                [f"SSL_CA_CERTS: {config.ssl_ca_certs!r} holds no usable PEM certificate: {exc}"]
            ) from None
    return context


class _PasswordNeeded(Exception):
    """An encrypted private key and no ``SSL_KEYFILE_PASSWORD``."""


def _no_password() -> bytes:
    raise _PasswordNeeded


def _why(exc: ssl.SSLError, config: Config) -> str:
    """A one-line reason for a certificate or key that OpenSSL refused."""
    text = f"{exc.reason} {exc}".lower().replace("_", " ")
    if "key values mismatch" in text:
        return "the private key does not belong to the certificate"
    if config.ssl_keyfile_password is not None and _encrypted(
        config.ssl_keyfile or config.ssl_certfile
    ):
        return "SSL_KEYFILE_PASSWORD does not decrypt the private key"
    if "no start line" in text or "pem lib" in text:
        return "not a PEM certificate chain and private key"
    return f"refused by OpenSSL: {exc}"


def _encrypted(path: str | None) -> bool:
    """Whether the PEM file at ``path`` holds an encrypted private key (PKCS#8 or legacy)."""
    if path is None:
        return False
    try:
        with open(path, "rb") as pem:
            text = pem.read(1 << 20)
    except OSError:
        return False
    return b"ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text
