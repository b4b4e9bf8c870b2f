"""Owners and bearer tokens: 401 without a valid token, jobs and results visible only to
their owner (404 for everyone else, on every UWS and web URL), per-owner limits, the
capabilities declaring the token interface, pyvo with a token session, and anonymity when
authentication is off."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import pyvo
import requests
from lxml import etree
from server import assert_valid_votable, load_schema, serve_archive
from test_batch_job import UWS, create, demo_catalog, job_document, wait_final
from uws_client import job_results

from vo_service.config import Limits, Settings, load_settings
from vo_service.protocols.auth import CHALLENGE, load_token_owners, parse_token_list

TOKENS = "alice:alice-secret-1,bob:bob-secret-2"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
JOB_DATA = {"UPLOAD": "cat,param:cat", "BANDNAME": ["VIS", "NIR-Y", "NIR-J"],
            "PRODUCTTYPE": "BGSUB", "SIZE": "16", "PHASE": "RUN"}
# (method, path under the job URL, form data) of every UWS resource of one job
JOB_REQUESTS = [
    ("GET", "", None), ("GET", "/phase", None), ("GET", "/parameters", None),
    ("GET", "/results", None), ("GET", "/results/manifest", None), ("GET", "/error", None),
    ("GET", "/owner", None), ("GET", "/quote", None), ("GET", "/destruction", None),
    ("GET", "/executionduration", None), ("POST", "/phase", {"PHASE": "ABORT"}),
    ("POST", "/destruction", {"DESTRUCTION": "2030-01-01T00:00:00Z"}),
    ("POST", "/executionduration", {"EXECUTIONDURATION": "10"}),
    ("POST", "/parameters", {"SIZE": "8"}), ("POST", "", {"ACTION": "DELETE"}),
    ("DELETE", "", None),
]


def bearer(token: str) -> httpx.Client:
    return httpx.Client(timeout=120, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def secured(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory):
    with serve_archive(demo_archive, tmp_path_factory.mktemp("auth-state"),
                       tokens=TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def alice():
    with bearer("alice-secret-1") as client:
        yield client


@pytest.fixture(scope="module")
def bob():
    with bearer("bob-secret-2") as client:
        yield client


@pytest.fixture(scope="module")
def alice_jobs(secured, alice, demo_archive):
    """Alice's finished catalog job (with stamps) and a failed one."""
    done = create(alice, secured, JOB_DATA, demo_catalog(demo_archive, 10))
    failed = create(alice, secured, {"UPLOAD": "cat,param:cat", "PHASE": "RUN"},
                    b"id,ra,dec\na,10,10\n")
    done_url, failed_url = str(done.url), str(failed.url)
    assert wait_final(alice, done_url).findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    assert wait_final(alice, failed_url).findtext("uws:phase", namespaces=UWS) == "ERROR"
    return done_url, failed_url


def assert_authentication_error(response: httpx.Response, words: str) -> None:
    assert response.status_code == 401, (response.request.url, response.status_code)
    assert response.headers["www-authenticate"] == CHALLENGE
    accept = response.request.headers.get("accept", "")
    if response.request.url.path.endswith("/sync") and "votable" not in accept:
        # SODA sync errors are text/plain, the form pyvo shows its users
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
    else:
        status = assert_valid_votable(response.content).resources[0].infos[-1]
        assert status.value == "ERROR"
        text = status.content
    assert text.startswith("AuthenticationError:") and words in text


def test_requests_without_a_valid_token_are_refused(secured) -> None:
    for path in ("query?MAXREC=1", "links?ID=x", "sync?ID=x&CIRCLE=1+1+1", "async",
                 "async/0123456789abcdef", "api/jobs", "api/facets", "preview?ID=x"):
        assert_authentication_error(httpx.get(secured.url(path)), "Authorization: Bearer")
        assert_authentication_error(
            httpx.get(secured.url(path), headers={"Authorization": "Bearer nope"}), "not valid")
    # a /sync client that prefers the DALI error VOTable gets it
    assert_authentication_error(httpx.get(secured.url("sync?ID=x&CIRCLE=1+1+1"), headers={
        "Accept": "application/x-votable+xml"}), "Authorization: Bearer")
    assert_authentication_error(httpx.post(secured.url("async"), data={"ID": "x"}),
                                "Authorization: Bearer")
    # VOSI stays anonymous; the page loads anonymously and its API calls carry the token
    for path in ("capabilities", "availability", "", "static/site.css", "examples"):
        assert httpx.get(secured.url(path)).status_code == 200, path


def test_two_authorization_headers_are_refused_not_first_wins(secured, alice_jobs) -> None:
    """Alice's job, asked for with her token and another one in either order (or twice):
    the server does not guess which header counts."""
    done_url, _ = alice_jobs
    alices, bobs = "Bearer alice-secret-1", "Bearer bob-secret-2"
    for first, second in ((alices, bobs), (bobs, alices), (alices, alices),
                          (alices, "Basic YWxpY2U6eA==")):
        headers = httpx.Headers([("Authorization", first), ("Authorization", second)])
        for url in (done_url, f"{done_url}/results/manifest", secured.url("async")):
            assert_authentication_error(httpx.get(url, headers=headers),
                                        "2 Authorization headers; send exactly one")
        assert_authentication_error(httpx.delete(done_url, headers=headers), "exactly one")
    assert httpx.get(done_url, headers={"Authorization": alices}).status_code == 200


def test_capabilities_declare_the_token_interface(secured) -> None:
    root = etree.fromstring(httpx.get(secured.url("capabilities")).content)
    load_schema("capabilities-bundle.xsd").assertValid(root)
    for capability in root.findall("capability"):
        methods = [i.find("securityMethod") for i in capability.findall("interface")]
        if "VOSI" in capability.get("standardID"):
            assert methods == [None]
        else:
            assert methods[0] is None
            assert methods[1].get("standardID") == "ivo://ivoa.net/sso#token"


def test_jobs_belong_to_their_owner(secured, alice, bob, alice_jobs) -> None:
    done_url, failed_url = alice_jobs
    root = job_document(alice, done_url)
    assert root.findtext("uws:ownerId", namespaces=UWS) == "alice"
    assert alice.get(f"{done_url}/owner").text == "alice"
    listed = etree.fromstring(alice.get(secured.url("async")).content)
    load_schema("UWS.xsd").assertValid(listed)
    mine = {ref.get("id") for ref in listed.iterfind("uws:jobref", UWS)}
    assert {done_url.rsplit("/", 1)[1], failed_url.rsplit("/", 1)[1]} <= mine
    assert {r.findtext("uws:ownerId", namespaces=UWS)
            for r in listed.iterfind("uws:jobref", UWS)} == {"alice"}
    others = etree.fromstring(bob.get(secured.url("async")).content)
    assert not mine & {ref.get("id") for ref in others.iterfind("uws:jobref", UWS)}
    assert alice.get(secured.url("api/jobs")).json()["jobs"]
    assert not {j["job_id"] for j in bob.get(secured.url("api/jobs")).json()["jobs"]} & mine


def test_another_owners_job_is_404_on_every_url(secured, alice, bob, alice_jobs) -> None:
    done_url, failed_url = alice_jobs
    stamp = next(k for k in job_results(alice, job_document(alice, done_url))
                 if k.endswith(".fits"))
    missing_url = secured.url("async/00000000deadbeef")
    for method, path, data in JOB_REQUESTS:
        url = (failed_url if path == "/error" else done_url) + path
        refused = bob.request(method, url, data=data)
        assert refused.status_code == 404, (method, path, refused.status_code)
        status = assert_valid_votable(refused.content).resources[0].infos[-1]
        job_id = url.split("/async/")[1].split("/")[0]
        nothing = bob.request(method, missing_url + path, data=data)
        assert status.content == assert_valid_votable(nothing.content).resources[0].infos[-1] \
            .content.replace("00000000deadbeef", job_id)  # says nothing more than "no job"
    for path in (f"results/{stamp}", "results/bundle"):
        assert bob.get(f"{done_url}/{path}").status_code == 404
        assert alice.get(f"{done_url}/{path}").status_code == 200
    web = done_url.replace("/async/", "/api/jobs/")
    for path in ("gallery", f"thumb/{stamp}", "composite/1"):
        assert bob.get(f"{web}/{path}").status_code == 404, path
    assert alice.get(f"{web}/gallery").json()["ready"]
    assert alice.get(f"{web}/thumb/{stamp}").headers["content-type"] == "image/png"
    assert alice.get(f"{failed_url}/error").status_code == 200
    # after all of bob's attempts, alice's job is untouched
    root = job_document(alice, done_url)
    assert root.findtext("uws:phase", namespaces=UWS) == "COMPLETED"
    assert root.findtext("uws:executionDuration", namespaces=UWS) != "10"


def test_pyvo_with_a_token_session(secured, demo_archive) -> None:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer bob-secret-2"
    found = pyvo.dal.SIA2Service(secured.base_url, session=session).search(
        pos=(52.9, -28.1, 0.05), maxrec=5)
    assert len(found) > 0
    created = session.post(secured.url("async"), data={**JOB_DATA, "PHASE": None},
                           files={"cat": ("t.csv", demo_catalog(demo_archive, 4))})
    job = pyvo.dal.AsyncTAPJob(created.url, session=session)
    assert job.owner == "bob"
    job.run().wait()
    job.raise_if_error()
    manifest = session.get(next(u for u in job.result_uris if u.endswith("/manifest")))
    assert manifest.status_code == 200
    with pytest.raises(pyvo.dal.DALQueryError, match="AuthenticationError"):
        pyvo.dal.SIA2Service(secured.base_url).search(pos=(52.9, -28.1, 0.05))


def test_per_owner_limits(demo_archive: Path, tmp_path: Path) -> None:
    limits = Limits(max_jobs_per_owner=2, max_result_bytes_per_owner=1)
    catalog = b"id,ra,dec\na,10,10\n"
    with serve_archive(demo_archive, tmp_path, tokens=TOKENS, limits=limits) as server, \
            bearer("alice-secret-1") as alice, bearer("bob-secret-2") as bob:
        first = create(alice, server, {"UPLOAD": "cat,param:cat"}, catalog)
        create(alice, server, {"UPLOAD": "cat,param:cat"}, catalog)
        refused = create(alice, server, {"UPLOAD": "cat,param:cat"}, catalog)
        assert refused.status_code == 403
        text = assert_valid_votable(refused.content).resources[0].infos[-1].content
        assert text.startswith("UsageError:") and "2 unfinished jobs" in text
        assert "DELETE" in text
        assert create(bob, server, {"UPLOAD": "cat,param:cat"}, catalog).status_code == 200
        alice.delete(str(first.url))
        ran = create(alice, server, {"UPLOAD": "cat,param:cat", "PHASE": "RUN"}, catalog)
        wait_final(alice, str(ran.url))  # ERROR (no overlap) with a manifest: result bytes
        refused = create(alice, server, {"UPLOAD": "cat,param:cat"}, catalog)
        assert refused.status_code == 403
        assert "MB" in assert_valid_votable(refused.content).resources[0].infos[-1].content


def test_without_tokens_everyone_is_anonymous(live_server) -> None:
    with httpx.Client(timeout=60) as client:
        response = create(client, live_server, {"UPLOAD": "cat,param:cat"}, b"id,ra,dec\na,1,2\n")
        assert response.status_code == 200
        root = job_document(client, str(response.url))
        assert root.find("uws:ownerId", UWS).get(XSI_NIL) == "true"
        assert client.get(f"{response.url}/owner").text == ""
        job_id = str(response.url).rsplit("/", 1)[1]
        assert job_id in client.get(live_server.url("async")).text
        capabilities = client.get(live_server.url("capabilities")).content
        assert b"securityMethod" not in capabilities
        client.delete(str(response.url))


def test_token_settings(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"carol-token").hexdigest()
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(f'[tokens]\n{digest} = "carol"\n')
    settings = load_settings(environ={"VO_SERVICE_TOKENS_FILE": str(tokens_file),
                                      "VO_SERVICE_TOKENS": "dave:dave-token",
                                      "VO_SERVICE_EXECUTOR": "dask",
                                      "VO_SERVICE_SCHEDULER": "tcp://10.0.0.5:8786"})
    assert settings.executor == "dask" and settings.scheduler == "tcp://10.0.0.5:8786"
    owners = load_token_owners(settings)
    assert owners == {digest: "carol",
                      hashlib.sha256(b"dave-token").hexdigest(): "dave"}
    assert load_token_owners(Settings()) is None
    with pytest.raises(ValueError, match="owner:token"):
        parse_token_list("just-a-token")
    with pytest.raises(ValueError, match="executor"):
        load_settings(environ={"VO_SERVICE_EXECUTOR": "spark"})
