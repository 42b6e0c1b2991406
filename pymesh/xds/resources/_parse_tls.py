"""envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext → UpstreamTls.

Follows gRPC A29: certificate provider instances are the normal way to get
credentials; SDS is rejected, as are validation options a client cannot honour
(SPKI/hash pinning, CRLs, SCTs, custom validators) — silently skipping them would
weaken security.
"""

from __future__ import annotations

from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pymesh.xds.resources._common import Ctx, is_set, join, unpack
from pymesh.xds.resources._parse_matchers import string_matcher
from pymesh.xds.resources.tls import (
    CertificateProviderInstance,
    SanMatcher,
    SanType,
    UpstreamTls,
)

_SAN_TYPES: dict[int, SanType] = {1: "EMAIL", 2: "DNS", 3: "URI", 4: "IP_ADDRESS"}
_DATA_SOURCE = "envoy.config.core.v3.DataSource@tls"
_TLS_VERSIONS = {1: "TLSv1_0", 2: "TLSv1_1", 3: "TLSv1_2", 4: "TLSv1_3"}


def _provider(ctx: Ctx, msg: Any, path: str) -> CertificateProviderInstance:
    ctx.check(msg, path)
    return CertificateProviderInstance(msg.instance_name, msg.certificate_name)


def _file(ctx: Ctx, ds: Any, path: str) -> str:
    which = ds.WhichOneof("specifier")
    if which != "filename":
        ctx.fail(join(path, which or "filename"), "only a filename data source is supported")
    return str(ds.filename)


def _validation_context(
    ctx: Ctx, vc: Any, path: str
) -> tuple[CertificateProviderInstance | None, tuple[SanMatcher, ...], str | None]:
    # The table NACKs the options that would tighten the checks (ignoring them is unsafe).
    ctx.check(vc, path)
    validation = None
    if vc.HasField("ca_certificate_provider_instance"):
        validation = _provider(
            ctx, vc.ca_certificate_provider_instance, join(path, "ca_certificate_provider_instance")
        )
    trusted_ca = None
    if vc.HasField("trusted_ca"):
        trusted_ca = _file(ctx, vc.trusted_ca, join(path, "trusted_ca"))
        ctx.check(vc.trusted_ca, join(path, "trusted_ca"), _DATA_SOURCE)
    sans: list[SanMatcher] = []
    for i, sm in enumerate(vc.match_subject_alt_names):
        sans.append(
            SanMatcher("ANY", string_matcher(ctx, sm, join(path, f"match_subject_alt_names[{i}]")))
        )
    for i, tsm in enumerate(vc.match_typed_subject_alt_names):
        p = join(path, f"match_typed_subject_alt_names[{i}]")
        san_type = _SAN_TYPES.get(int(tsm.san_type))
        if san_type is None:
            ctx.fail(join(p, "san_type"), "san_type must be EMAIL, DNS, URI or IP_ADDRESS")
        ctx.check(tsm, p)
        sans.append(SanMatcher(san_type, string_matcher(ctx, tsm.matcher, join(p, "matcher"))))
    return validation, tuple(sans), trusted_ca


def identity_provider(ctx: Ctx, c: Any, cp: str) -> CertificateProviderInstance | None:
    """A CommonTlsContext's own certificate: tls_certificate_provider_instance, else the
    deprecated tls_certificate_certificate_provider_instance; None without either."""
    for field in (
        "tls_certificate_provider_instance",
        "tls_certificate_certificate_provider_instance",
    ):
        if c.HasField(field):
            return _provider(ctx, getattr(c, field), join(cp, field))
    return None


def validation_context_type(
    ctx: Ctx, c: Any, cp: str
) -> tuple[CertificateProviderInstance | None, tuple[SanMatcher, ...], str | None]:
    """A CommonTlsContext's validation_context_type oneof (at ``cp``): the roots'
    provider, the SAN matchers and the trusted_ca file (None where not set). A combined
    context's provider instance takes over from its default context's."""
    which = c.WhichOneof("validation_context_type")
    if which == "validation_context":
        return _validation_context(ctx, c.validation_context, join(cp, which))
    if which == "combined_validation_context":
        cvp = join(cp, which)
        cvc = c.combined_validation_context
        ctx.check(cvc, cvp)
        validation, sans, trusted_ca = _validation_context(
            ctx, cvc.default_validation_context, join(cvp, "default_validation_context")
        )
        if cvc.HasField("validation_context_certificate_provider_instance"):
            validation = _provider(
                ctx,
                cvc.validation_context_certificate_provider_instance,
                join(cvp, "validation_context_certificate_provider_instance"),
            )
        return validation, sans, trusted_ca
    if which == "validation_context_certificate_provider_instance":
        return (
            _provider(ctx, c.validation_context_certificate_provider_instance, join(cp, which)),
            (),
            None,
        )
    if which is not None:
        ctx.fail(join(cp, which), f"{which} is not supported")
    return None, (), None


def upstream_tls(ctx: Ctx, any_msg: Any, path: str) -> UpstreamTls:
    """Parse an UpstreamTlsContext packed in ``any_msg`` (a transport socket's typed_config)."""
    utc = unpack(ctx, any_msg, tls_pb2.UpstreamTlsContext, path)
    cp = join(path, "common_tls_context")
    c = utc.common_tls_context
    for sds in ("tls_certificate_sds_secret_configs", "validation_context_sds_secret_config"):
        if is_set(c, sds):
            ctx.fail(join(cp, sds), "SDS is not supported; use certificate provider instances")
    identity = identity_provider(ctx, c, cp)
    cert_file = key_file = None
    if c.tls_certificates:
        tp = join(cp, "tls_certificates[0]")
        cert = c.tls_certificates[0]
        ctx.check(cert, tp)
        cert_file = _file(ctx, cert.certificate_chain, join(tp, "certificate_chain"))
        key_file = _file(ctx, cert.private_key, join(tp, "private_key"))
        ctx.check(cert.certificate_chain, join(tp, "certificate_chain"), _DATA_SOURCE)
        ctx.check(cert.private_key, join(tp, "private_key"), _DATA_SOURCE)
        if len(c.tls_certificates) > 1:
            ctx.unsupported_field(
                join(cp, "tls_certificates[1]"), "only the first certificate is used"
            )
    if c.WhichOneof("validation_context_type") == "combined_validation_context":
        cvc = c.combined_validation_context
        if cvc.HasField("validation_context_sds_secret_config"):
            ctx.fail(
                join(
                    join(cp, "combined_validation_context"), "validation_context_sds_secret_config"
                ),
                "SDS is not supported",
            )
    validation, sans, trusted_ca = validation_context_type(ctx, c, cp)
    min_v = max_v = None
    ciphers: tuple[str, ...] = ()
    if c.HasField("tls_params"):
        tp = c.tls_params
        min_v = _TLS_VERSIONS.get(int(tp.tls_minimum_protocol_version))
        max_v = _TLS_VERSIONS.get(int(tp.tls_maximum_protocol_version))
        ciphers = tuple(tp.cipher_suites)
        ctx.check(tp, join(cp, "tls_params"))
    ctx.check(c, cp)
    ctx.check(utc, path)
    return UpstreamTls(
        identity=identity,
        validation=validation,
        san_matchers=sans,
        sni=utc.sni,
        alpn_protocols=tuple(c.alpn_protocols),
        min_version=min_v,
        max_version=max_v,
        cipher_suites=ciphers,
        certificate_file=cert_file,
        private_key_file=key_file,
        trusted_ca_file=trusted_ca,
    )
