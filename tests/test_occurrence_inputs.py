"""occurrence-cleaning's inputs as researchers have them: every check that can be made on them is
made at submission, a 400 naming the field, while the same request with that one thing fixed is
accepted (issue 15)."""

import json

import pytest

from jobs.models import Job
from tests import synthetic
from tests.support.factories import upload

pytestmark = pytest.mark.django_db

CSV = b"species_name,x,y,flags\nAcer rubrum,-80.5,35.25,ok\nAcer rubrum,-81.5,36.25,dubious\n"


def _job(api, occurrences, name_map=None, **params):
    ids = []
    for filename, content in occurrences:
        response = upload(api, filename, content)
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
    inputs = {"occurrences": ids}
    if name_map is not None:
        response = upload(api, *name_map)
        assert response.status_code == 201, response.content
        inputs["name_map"] = response.json()["id"]
    return {"workflow": "occurrence-cleaning", "inputs": inputs, "params": params}


def _refused(api, body, field, words):
    before = Job.objects.count()
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert field in errors, errors
    assert words in " ".join(errors[field]), errors
    assert Job.objects.count() == before
    return errors


def _accepted(api, body):
    response = api.post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


ACCEPTED = [{"type": "accepted_names", "unmapped": "drop"}]


@pytest.mark.parametrize("form", ["json", "csv"])
def test_a_name_map_lmpy_wrote_with_unresolved_names_is_accepted(api, data_dir, form):
    pytest.importorskip("lmpy")
    content = synthetic.lmpy_name_map(synthetic.ODD_NAMES_MAP, form)
    assert (b"null" if form == "json" else b"None") in content
    body = _job(api, [("occ.zip", synthetic.odd_names_dwca())], (f"names.{form}", content))
    _accepted(api, {**body, "params": {"wranglers": ACCEPTED}})


def test_a_json_map_named_txt_is_read_by_its_content(api, data_dir):
    content = json.dumps({"Acer rubrum": None, "Acer rubrum L.": "Acer rubrum"}).encode()
    body = _job(api, [("occ.csv", CSV)], ("names.txt", content), wranglers=ACCEPTED)
    _accepted(api, body)


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"Acer rubrum": ["Acer rubrum"]}', "gives 'Acer rubrum' a list"),
        (b'{"Acer rubrum": 1}', "expected an accepted name (text) or null"),
        (b"Acer rubrum,Acer rubrum,L.\n", "line 1 has 3 fields"),
        (b"Name,Accepted\n", "holds no names"),
    ],
)
def test_a_name_map_that_does_not_read_is_a_400_at_submission(api, data_dir, content, words):
    suffix = "json" if content.startswith(b"{") else "csv"
    body = _job(api, [("occ.csv", CSV)], (f"names.{suffix}", content), wranglers=ACCEPTED)
    _refused(api, body, "inputs.name_map", words)
    twin = _job(api, [("occ.csv", CSV)], ("names.csv", b"Acer rubrum,Acer rubrum\n"))
    _accepted(api, {**twin, "params": {"wranglers": ACCEPTED}})


def test_a_map_that_resolves_nothing_with_unmapped_drop_is_refused(api, data_dir):
    body = _job(api, [("occ.csv", CSV)], ("names.json", b'{"Acer rubrum": null}'))
    _refused(api, {**body, "params": {"wranglers": ACCEPTED}}, "inputs.name_map", "no record")
    keep = [{"type": "accepted_names", "unmapped": "keep"}]
    _accepted(api, {**body, "params": {"wranglers": keep}})


def test_an_attribute_filter_on_a_column_no_input_has_is_refused(api, data_dir):
    step = {"type": "attribute_filter", "attribute": "flag", "exclude": ["dubious"]}
    body = _job(api, [("occ.csv", CSV)], wranglers=[step])
    _refused(api, body, "params.wranglers[0].attribute", "no occurrence input has 'flag'")
    step["attribute"] = "flags"
    _accepted(api, body)


def test_an_attribute_filter_on_a_dwca_reads_the_core_term_names(api, data_dir):
    step = {"type": "attribute_filter", "attribute": "countryCode", "exclude": ["CA"]}
    body = _job(api, [("occ.zip", synthetic.odd_names_dwca())], wranglers=[step])
    _refused(api, body, "params.wranglers[0].attribute", "countryCode")
    step["attribute"] = "country"
    _accepted(api, body)


@pytest.mark.parametrize(
    "row, words",
    [
        (b"Acer rubrum,west,35.25", "'x' is not a number ('west')"),
        (b"Acer rubrum,-80.5,", "'y' is not a number"),
        (b"Acer rubrum,nan,35.25", "'x' is not a finite number"),
        (b"Acer rubrum,-80.5,135.25", "'y' is 135.25, outside -90 to 90"),
        (b"Acer rubrum,-80.5", "too few for 'y'"),
    ],
)
def test_each_record_s_coordinates_are_checked_at_submission(api, data_dir, row, words):
    content = b"species_name,x,y\n" + b"Acer rubrum,-80.5,35.25\n" * 300 + row + b"\n"
    body = _job(api, [("occ.csv", content)])
    _refused(api, body, "inputs.occurrences[0]", words)
    good = b"species_name,x,y\n" + b"Acer rubrum,-80.5,35.25\n" * 301
    _accepted(api, _job(api, [("occ.csv", good)]))


def test_projected_coordinates_pass_when_the_request_converts_them(api, data_dir):
    content = b"species_name,x,y\nAcer rubrum,1500000.5,-2500000.25\n"
    body = _job(api, [("occ.csv", content)])
    _refused(api, body, "inputs.occurrences[0]", "coordinate_conversion")
    step = {"type": "coordinate_conversion", "source_epsg": 5070, "target_epsg": 4326}
    _accepted(api, {**body, "params": {"wranglers": [step]}})


def test_column_names_are_matched_without_their_outer_spaces(api, data_dir):
    body = _job(api, [("occ.csv", b"species_name , x, y\nAcer rubrum,-80.5,35.25\n")])
    _accepted(api, body)
    _refused(api, {**body, "params": {"x_column": "lon"}}, "inputs.occurrences[0]", "x_column")


def _dwca(meta_change=None, drop=(), data=None, rename=None):
    """The odd-names archive with meta.xml changed by `meta_change`, members dropped or
    renamed."""
    import io
    import zipfile

    members = {}
    with zipfile.ZipFile(io.BytesIO(synthetic.odd_names_dwca())) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    if meta_change:
        members["meta.xml"] = meta_change(members["meta.xml"].decode()).encode()
    if data is not None:
        members["occurrence.txt"] = data
    for name in drop:
        members.pop(name)
    for old, new in (rename or {}).items():
        members[new] = members.pop(old)
    return synthetic.zip_bytes(members)


TERMS = "http://rs.tdwg.org/dwc/terms/"


@pytest.mark.parametrize(
    "archive, words",
    [
        (_dwca(lambda m: m.replace(f"{TERMS}scientificName", f"{TERMS}taxonRank")), "scientific"),
        (
            _dwca(lambda m: m.replace(f"{TERMS}decimalLatitude", f"{TERMS}verbatimLatitude")),
            "decimalLongitude and decimalLatitude (or geoPoint)",
        ),
        (_dwca(lambda m: m.replace("<core ", "<other ").replace("</core>", "</other>")), "no core"),
        (_dwca(drop=["occurrence.txt"]), "lacks its core data file 'occurrence.txt'"),
        (_dwca(lambda m: m.replace('encoding="UTF-8" f', 'encoding="klingon" f')), "encoding"),
        (_dwca(data="id,scientificName\nocc-1,Ac\xe9r\n".encode("latin-1")), "not UTF-8 text"),
        (_dwca(data=b"id,scientificName,decimalLongitude\n"), "holds no records"),
        (_dwca(lambda m: m.replace("<archive", "<archive><unclosed")), "does not parse as XML"),
        (
            _dwca(lambda m: m.replace("<archive", '<!DOCTYPE a [<!ENTITY e "e">]>\n<archive')),
            "does not parse as XML",  # entities (billion laughs) are refused
        ),
        (_dwca(rename={"meta.xml": "dwca/meta.xml"}), "meta.xml is not at its root"),
    ],
)
def test_a_dwca_the_tools_cannot_read_is_a_400_at_submission(api, data_dir, archive, words):
    body = _job(api, [("occ.zip", archive)])
    _refused(api, body, "inputs.occurrences[0]", words)
    _accepted(api, _job(api, [("occ.zip", synthetic.odd_names_dwca())]))


def test_the_gbif_resolver_is_refused_where_the_deployment_has_not_enabled_it(
    api, data_dir, settings
):
    settings.GBIF_NAMES = False
    resolving = [{"type": "accepted_names", "name_resolver": "gbif"}]
    body = _job(api, [("occ.csv", CSV)], wranglers=resolving)
    _refused(api, body, "params.wranglers[0].name_resolver", "does not resolve names through GBIF")
    settings.GBIF_NAMES, settings.GBIF_API_URL = True, "http://names.example/v1"
    job = _accepted(api, body)
    stored = Job.objects.get(pk=job["id"]).request["params"]["wranglers"][0]
    # The deployment's address, recorded with the job; a user cannot set it.
    assert stored["api_url"] == "http://names.example/v1"
    resolving[0]["api_url"] = "http://127.0.0.1:1/"
    _refused(api, body, "params.wranglers[0].api_url", "unknown field")
