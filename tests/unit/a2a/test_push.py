"""The SSRF guard of push URLs (mesh.a2a.push.PushPolicy); name resolution only, no sockets."""

from __future__ import annotations

import ipaddress

import pytest

from mesh.a2a.push import PushPolicy, PushUrlError, parse_allow_list


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/hook", "must use https"),
        ("https://169.254.169.254/latest/meta-data/", "non-public"),
        ("https://[fd00:ec2::254]/", "non-public"),
        ("https://localhost/hook", "non-public"),
        ("https://127.0.0.1:8443/hook", "non-public"),
        ("https://2130706433/hook", "non-public"),  # 127.0.0.1 written as one number
        ("https://0x7f.1/hook", "non-public|does not resolve"),
        ("https://[::1]/hook", "non-public"),
        ("https://[::ffff:10.0.0.1]/hook", "non-public"),
        ("https://[fe80::1]/hook", "non-public"),
        ("https://10.0.0.5/hook", "non-public"),
        ("https://172.16.3.4/hook", "non-public"),
        ("https://192.168.1.1/hook", "non-public"),
        ("https://100.64.0.1/hook", "non-public"),
        ("https://0.0.0.0/hook", "non-public"),
        ("https://224.0.0.1/hook", "non-public"),
        ("https://user:secret@8.8.8.8/hook", "user info"),
        ("https:///hook", "no host"),
        ("https://8.8.8.8:99999/hook", "malformed"),
        ("https://8.8.8.8/" + "a" * 2100, "longer than"),
    ],
)
async def test_hostile_push_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(PushUrlError, match=why):
        await PushPolicy().resolve(url)
    assert not await PushPolicy().accepts(url)


async def test_the_connection_goes_to_the_validated_address_with_the_host_name_kept() -> None:
    target = await PushPolicy().resolve("https://8.8.8.8:8443/hook?x=1")
    assert target.pinned_url == "https://8.8.8.8:8443/hook?x=1"
    assert (target.host, target.host_header) == ("8.8.8.8", "8.8.8.8:8443")
    six = await PushPolicy().resolve("https://[2001:4860:4860::8888]/h")
    assert six.pinned_url == "https://[2001:4860:4860::8888]:443/h"


async def test_only_what_the_allow_list_names_is_let_through() -> None:
    policy = PushPolicy(parse_allow_list("127.0.0.1, 10.1.0.0/16"))
    assert str((await policy.resolve("https://127.0.0.1:9/h")).address) == "127.0.0.1"
    assert (await policy.resolve("https://10.1.200.3/h")).address == ipaddress.ip_address(
        "10.1.200.3"
    )
    for url in ("https://127.0.0.2/h", "https://10.2.0.1/h", "https://169.254.169.254/"):
        with pytest.raises(PushUrlError):
            await policy.resolve(url)
    with pytest.raises(ValueError, match="not an address"):
        parse_allow_list("127.0.0.1,nonsense")


async def test_plain_http_only_with_the_setting_and_only_to_listed_addresses() -> None:
    assert not await PushPolicy(parse_allow_list("127.0.0.1")).accepts("http://127.0.0.1:9/h")
    policy = PushPolicy(parse_allow_list("127.0.0.1"), allow_http=True)
    target = await policy.resolve("http://127.0.0.1:9/h")
    assert target.pinned_url == "http://127.0.0.1:9/h"
    assert (await policy.resolve("http://127.0.0.1/h")).host_header == "127.0.0.1"
    for url in ("http://8.8.8.8/h", "http://10.0.0.1/h", "ftp://127.0.0.1/h"):
        assert not await policy.accepts(url), url


async def test_a_name_that_does_not_resolve_is_accepted_now_and_checked_at_delivery() -> None:
    url = "https://receiver.example.invalid/hook"
    assert await PushPolicy().accepts(url)
    with pytest.raises(PushUrlError, match="does not resolve"):
        await PushPolicy().resolve(url)
