"""Fill a database with synthetic Glance images, then time the DB API and count its SQL.

The data: N images (default 100,000), each with 5 properties, 2 tags and one location (unless it
has no data yet); ~100 owner projects with a skewed share of the images and a few unowned images; a mix
of visibilities and statuses (some soft-deleted); created_at spread over two years with ties
(images created in the same second); 2,000 shared images with 1 to 3 member projects each
(accepted, pending, rejected, a few soft-deleted member rows). Rows go in with SQLAlchemy Core
executemany, one transaction per batch of images with their children. PostgreSQL and MariaDB
are ANALYZEd after the fill; SQLite only with --sqlite-analyze (Glance never analyzes it).

Every case then runs a few warm-up times and --repeat measured times through the real
``glance_cache_mw.db.api`` functions; a ``before_cursor_execute`` listener on the engine counts
the SQL statements each call issues (transaction control such as BEGIN is not counted, so the
numbers compare across databases). The result is a markdown table on stdout; progress and load
go to stderr. With --explain the plans of the captured statements follow the table.

  python tools/bench_db.py                                   # temporary SQLite file
  python tools/bench_db.py --url postgresql://postgres@127.0.0.1:5432/postgres
  python tools/bench_db.py --url mysql://root@127.0.0.1:3306/test

For a server URL a scratch database gcm_bench_<random> is created next to the one named in the
URL and dropped at the end (--keep keeps it; --no-fill then measures it again, with --url naming
the kept database itself).
"""

import argparse
import contextlib
import dataclasses
import datetime
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import sqlalchemy as sa

from glance_cache_mw.context import RequestContext
from glance_cache_mw.db import engine as db_engine
from glance_cache_mw.db import migration, models

TARGET_MEDIAN_MS = 20.0
TARGET_RETURN_TAG_STATEMENTS = 3
PAGE_SIZE = 25

START = datetime.datetime(2024, 1, 1)
SPAN_S = 2 * 365 * 24 * 3600
DISTROS = ("ubuntu", "centos", "fedora", "debian", "rhel", "rocky", "alma", "opensuse",
           "arch", "cirros", "windows", "freebsd")
TAGS = tuple("tag-%02d" % i for i in range(50))
# (visibility, weight) and (status, weight): mostly shared/private, mostly active.
VISIBILITY_WEIGHTS = (("shared", 50), ("private", 38), ("public", 8), ("community", 4))
STATUS_WEIGHTS = (("active", 915), ("queued", 20), ("saving", 5), ("killed", 10),
                  ("deactivated", 15), ("importing", 5), ("deleted", 30))
MEMBER_STATUS_WEIGHTS = (("accepted", 60), ("pending", 25), ("rejected", 15))
TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bench_db.py", description=__doc__.strip().splitlines()[0],
        epilog="Targets: every case under %d ms median; a page of %d with return_tag in at most "
               "%d SQL statements." % (TARGET_MEDIAN_MS, PAGE_SIZE, TARGET_RETURN_TAG_STATEMENTS))
    parser.add_argument("--url", help="database URL (default: a temporary SQLite file); for "
                        "postgresql:// and mysql:// a scratch database is created on that server")
    parser.add_argument("--images", type=int, default=100_000, help="images (default %(default)s)")
    parser.add_argument("--projects", type=int, default=100, help="owner projects (default "
                        "%(default)s)")
    parser.add_argument("--shared-with-members", type=int, default=2000, metavar="N",
                        help="shared images that get 1-3 member projects (default %(default)s)")
    parser.add_argument("--batch", type=int, default=5000, help="images per insert transaction "
                        "(default %(default)s)")
    parser.add_argument("--repeat", type=int, default=30, help="measured runs per case "
                        "(default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per case first "
                        "(default %(default)s)")
    parser.add_argument("--budget-s", type=float, default=60.0, help="stop repeating a case "
                        "once its measured runs took this long (default %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default %(default)s)")
    parser.add_argument("--sqlite-analyze", action="store_true", help="ANALYZE a SQLite "
                        "database after filling too (Glance never does; shows what statistics "
                        "change)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-fill", action="store_true", help="measure the database at --url "
                        "as it is (one filled by an earlier run with --keep)")
    parser.add_argument("--explain", choices=("none", "slow", "all"), default="slow",
                        help="print query plans for cases that miss a target, or all "
                             "(default %(default)s)")
    parser.add_argument("--only", metavar="SUBSTRING", action="append",
                        help="run only the cases whose name contains this (repeatable)")
    return parser


# -- data ----------------------------------------------------------------------------------------

def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex(rng, nbytes):
    return "%0*x" % (nbytes * 2, rng.getrandbits(nbytes * 8))


def make_projects(rng, count):
    """Project ids (32 hex digits, like Keystone's) and a skewed weight for each."""
    projects = [_hex(rng, 16) for _ in range(count)]
    weights = [1.0 / (rank + 1) ** 0.7 for rank in range(count)]
    return projects, weights


def _pick(rng, weighted):
    values, weights = zip(*weighted)
    return rng.choices(values, weights)[0]


def make_created_at(rng, count):
    """Whole-second timestamps over SPAN_S; ~10% of images share their second with others."""
    times = []
    while len(times) < count:
        when = START + datetime.timedelta(seconds=rng.randrange(SPAN_S))
        burst = rng.randint(2, 5) if rng.random() < 0.03 else 1  # a bulk upload: same second
        times.extend([when] * burst)
    del times[count:]
    rng.shuffle(times)
    return times


def image_rows(rng, index, image_id, created_at, owner, visibility, status):
    """The images row plus its property, tag and location rows."""
    deleted = status == "deleted"
    updated_at = created_at + datetime.timedelta(seconds=rng.randrange(3 * 24 * 3600))
    deleted_at = updated_at if deleted else None
    distro = rng.choice(DISTROS)
    version = "%d.%d" % (rng.randint(6, 24), rng.randint(0, 10))
    book = {"created_at": created_at, "updated_at": updated_at, "deleted_at": deleted_at,
            "deleted": deleted}
    has_data = status not in ("queued", "saving", "importing")
    image = {
        "id": image_id, "name": "%s-%s-%06d" % (distro, version, index),
        "disk_format": rng.choice(("qcow2", "raw", "qcow2", "iso", "vmdk")),
        "container_format": rng.choice(("bare", "bare", "bare", "ova")),
        "size": rng.randrange(10 ** 7, 10 ** 10) if has_data else None,
        "virtual_size": rng.randrange(10 ** 9, 10 ** 11) if has_data else None,
        "status": status, "visibility": visibility,
        "checksum": _hex(rng, 16) if has_data else None,
        "os_hash_algo": "sha512" if has_data else None,
        "os_hash_value": _hex(rng, 64) if has_data else None,
        "min_disk": rng.choice((0, 0, 1, 10, 20)), "min_ram": rng.choice((0, 0, 512, 1024)),
        "owner": owner, "protected": rng.random() < 0.02, "os_hidden": rng.random() < 0.01,
        **book,
    }
    props = {
        "os_distro": distro, "os_version": version,
        "architecture": "aarch64" if rng.random() < 0.15 else "x86_64",
        "hw_disk_bus": rng.choice(("virtio", "virtio", "scsi")),
        "description": "Synthetic %s %s image number %d for the DB benchmark" % (
            distro, version, index),
    }
    properties = [{"image_id": image_id, "name": name, "value": value, **book}
                  for name, value in props.items()]
    tags = [{"image_id": image_id, "value": value, **book} for value in rng.sample(TAGS, 2)]
    locations = []
    if has_data:
        locations.append({"image_id": image_id, "value": "file:///var/lib/glance/images/" +
                          image_id, "meta_data": "{}",
                          "status": "deleted" if deleted else "active", **book})
    return image, properties, tags, locations


class Fill:
    """The synthetic data set: image rows in batches, then member rows for shared images."""

    def __init__(self, args):
        self.rng = random.Random(args.seed)
        self.projects, self.weights = make_projects(self.rng, args.projects)
        self.count = args.images
        self.created = make_created_at(self.rng, self.count)
        self.shared_ids = []     # live shared images, candidates for members

    def batches(self, size):
        """Yield (images, properties, tags, locations) lists for `size` images at a time."""
        rng = self.rng
        for start in range(0, self.count, size):
            out = ([], [], [], [])
            for index in range(start, min(start + size, self.count)):
                image_id = _uuid(rng)
                owner = (None if rng.random() < 0.002
                         else rng.choices(self.projects, self.weights)[0])
                visibility = _pick(rng, VISIBILITY_WEIGHTS)
                status = _pick(rng, STATUS_WEIGHTS)
                rows = image_rows(rng, index, image_id, self.created[index], owner, visibility,
                                  status)
                out[0].append(rows[0])
                for bucket, extra in zip(out[1:], rows[1:]):
                    bucket.extend(extra)
                if visibility == "shared" and status != "deleted" and owner:
                    self.shared_ids.append((image_id, owner, rows[0]["created_at"]))
            yield out

    def members(self, count):
        """Member rows for `count` shared images: 1-3 projects each, mixed statuses."""
        rng = self.rng
        rows = []
        for image_id, owner, created_at in rng.sample(self.shared_ids,
                                                      min(count, len(self.shared_ids))):
            others = [p for p in rng.sample(self.projects, 4) if p != owner]
            for member in others[:rng.randint(1, 3)]:
                deleted = rng.random() < 0.05
                when = created_at + datetime.timedelta(hours=rng.randint(1, 200))
                rows.append({"image_id": image_id, "member": member, "can_share": False,
                             "status": _pick(rng, MEMBER_STATUS_WEIGHTS),
                             "created_at": when, "updated_at": when,
                             "deleted_at": when if deleted else None, "deleted": deleted})
        return rows


def progress(message):
    sys.stderr.write("\r\x1b[K" + message if sys.stderr.isatty() else message + "\n")
    sys.stderr.flush()


def fill(engine, args):
    """Create the schema, insert the synthetic data, maybe ANALYZE: (seconds, analyzed)."""
    began = time.perf_counter()
    migration.sync(engine)
    data = Fill(args)
    done = 0
    for images, properties, tags, locations in data.batches(args.batch):
        with engine.begin() as conn:
            conn.execute(models.images.insert(), images)
            conn.execute(models.image_properties.insert(), properties)
            conn.execute(models.image_tags.insert(), tags)
            if locations:
                conn.execute(models.image_locations.insert(), locations)
        done += len(images)
        elapsed = time.perf_counter() - began
        progress("filling: %d/%d images (%.0f/s)" % (done, data.count, done / elapsed))
    members = data.members(args.shared_with_members)
    with engine.begin() as conn:
        for start in range(0, len(members), args.batch):
            conn.execute(models.image_members.insert(), members[start:start + args.batch])
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    backend = engine.url.get_backend_name()
    analyzed = backend != "sqlite" or args.sqlite_analyze
    # A server analyzes a freshly loaded table by itself soon enough (autovacuum, InnoDB
    # persistent statistics); do it now so every run plans with statistics. SQLite never does,
    # and a Glance SQLite database is never ANALYZEd, so ours is not unless --sqlite-analyze.
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    elif backend == "sqlite" and args.sqlite_analyze:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    elif backend in ("mysql", "mariadb"):
        with engine.begin() as conn:
            for table in ("images", "image_properties", "image_tags", "image_locations",
                          "image_members"):
                conn.exec_driver_sql("ANALYZE TABLE %s" % table).fetchall()
    elapsed = time.perf_counter() - began
    progress("filled %d images, %d members in %.1f s" % (data.count, len(members), elapsed))
    return elapsed, analyzed


# -- the database --------------------------------------------------------------------------------

@contextlib.contextmanager
def bench_database(args):
    """Yield the URL to fill and measure; remove what this created unless --keep."""
    if not args.url:
        tmpdir = tempfile.mkdtemp(prefix="gcm_bench_")
        path = os.path.join(tmpdir, "glance.sqlite")
        try:
            yield "sqlite:///" + path
        finally:
            if args.keep:
                progress("kept %s" % path)
            else:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return
    url = db_engine.normalize_url(args.url)
    if url.get_backend_name() == "sqlite" or args.no_fill:
        yield url.render_as_string(hide_password=False)
        return
    name = "gcm_bench_%s" % secrets.token_hex(4)
    server = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE %s" % name)
        progress("created scratch database %s" % name)
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            if args.keep:
                progress("kept database %s" % name)
            else:
                db_engine.dispose()
                with server.connect() as conn:
                    conn.exec_driver_sql("DROP DATABASE %s" % name)
                progress("dropped database %s" % name)
    finally:
        server.dispose()


class StatementLog:
    """Records every SQL statement an engine sends, except transaction control."""

    def __init__(self, engine):
        self.statements = []
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany):
        if not TRANSACTION_CONTROL.match(statement):
            self.statements.append((statement, parameters))

    def take(self):
        taken, self.statements = self.statements, []
        return taken


def explain(engine, statement, parameters):
    """The database's plan for one captured statement, as text."""
    backend = engine.url.get_backend_name()
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN (ANALYZE, BUFFERS) ",
              "mysql": "ANALYZE ", "mariadb": "ANALYZE "}[backend]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(prefix + statement, parameters)
        except Exception as err:  # a plan we cannot get should not lose the table above
            return "(no plan: %s)" % err
        rows = cursor.fetchall()
        header = [column[0] for column in cursor.description]
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    if backend == "sqlite":
        return "\n".join("%s %s" % (row[0], row[-1]) for row in rows)
    if backend == "postgresql":
        return "\n".join(row[0] for row in rows)
    return "\n".join(" | ".join(str(value) for value in row) for row in [header, *rows])


# -- cases ---------------------------------------------------------------------------------------

def pick_subjects(engine):
    """Ids and projects the cases use, found with plain SQL outside the measurements."""
    images, members = models.images, models.image_members
    with engine.connect() as conn:
        live = sa.and_(images.c.deleted == sa.false(), images.c.status != "killed")
        total = conn.execute(sa.select(sa.func.count()).where(live)).scalar_one()
        marker = conn.execute(
            sa.select(images.c.id).where(live)
            .order_by(images.c.created_at.desc(), images.c.id.desc())
            .offset(min(50_000, total // 2)).limit(1)).scalar_one()
        # The non-admin caller: the project with the most accepted shares.
        member_project = conn.execute(
            sa.select(members.c.member).where(members.c.status == "accepted",
                                              members.c.deleted == sa.false())
            .group_by(members.c.member)
            .order_by(sa.func.count().desc(), members.c.member).limit(1)).scalar_one()
        shared_row = conn.execute(
            sa.select(images).join(members, members.c.image_id == images.c.id)
            .where(members.c.member == member_project, members.c.status == "accepted",
                   members.c.deleted == sa.false(), images.c.deleted == sa.false(),
                   images.c.visibility == "shared")
            .order_by(images.c.id).limit(1)).mappings().one()
        newest, oldest = conn.execute(
            sa.select(sa.func.max(images.c.created_at), sa.func.min(images.c.created_at))).one()
    return {"marker": marker, "member_project": member_project,
            "shared_image": dict(shared_row), "live_images": total,
            "recent": newest - datetime.timedelta(days=30),
            "middle": oldest + (newest - oldest) / 2}


def build_cases(api, subjects):
    """[(name, caller, function)]: each function makes one DB API call and returns a count."""
    admin = RequestContext(project_id=None, is_admin=True)
    member = RequestContext(project_id=subjects["member_project"], is_admin=False)
    live = {"deleted": False}   # what the v2 API always passes (reference §5.3)
    shared = subjects["shared_image"]
    recent = subjects["recent"].strftime("%Y-%m-%dT%H:%M:%SZ")
    middle = subjects["middle"].strftime("%Y-%m-%dT%H:%M:%SZ")

    def page(context, **kwargs):
        return lambda: len(api.image_get_all(context, limit=PAGE_SIZE, **kwargs))

    cases = [
        ("first page", "admin", page(admin, filters=dict(live))),
        ("first page, shared member", "member", page(member, filters=dict(live),
                                                     member_status="accepted")),
        ("page after marker ~50k deep", "admin", page(admin, filters=dict(live),
                                                      marker=subjects["marker"])),
    ]
    filtered = [
        ("property os_distro=debian", {"os_distro": "debian"}),
        ("tag tag-07", {"tags": ["tag-07"]}),
        ("created_at gte:(newest - 30 d)", {"created_at": "gte:" + recent}),
        ("created_at lt:(middle)", {"created_at": "lt:" + middle}),
    ]
    for name, extra in filtered:
        for caller, context in (("admin", admin), ("member", member)):
            cases.append((name, caller, page(context, filters={**live, **extra})))
    cases += [
        ("image_get (shared, member)", "member",
         lambda: len([api.image_get(member, shared["id"])])),
        ("is_image_visible (shared, member)", "member",
         lambda: int(bool(api.is_image_visible(member, shared)))),
        ("first page, return_tag", "admin", page(admin, filters=dict(live), return_tag=True)),
    ]
    return cases


@dataclasses.dataclass
class Result:
    name: str
    caller: str
    samples_ms: list
    cpu_ms: list          # CPU time of this process per call (SQLite's work included)
    statements: list      # per measured call
    rows: int
    captured: list        # (statement, parameters) of the last call

    @property
    def median_ms(self):
        return statistics.median(self.samples_ms)

    @property
    def p95_ms(self):
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]

    @property
    def most_statements(self):
        return max(self.statements)

    @property
    def shown_statements(self):
        low, high = min(self.statements), max(self.statements)
        return str(high) if low == high else "%d-%d" % (low, high)

    @property
    def is_met(self):
        ok = self.median_ms < TARGET_MEDIAN_MS
        if "return_tag" in self.name:
            ok = ok and self.most_statements <= TARGET_RETURN_TAG_STATEMENTS
        return ok


def measure(name, caller, function, log, args):
    """Warm up, then time --repeat calls (fewer when a case exceeds --budget-s seconds)."""
    began = time.perf_counter()
    for _ in range(args.warmup):
        function()
        if time.perf_counter() - began > args.budget_s / 4:
            break
    log.take()
    samples, cpu, counts, rows, captured = [], [], [], None, []
    began = time.perf_counter()
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = function()
        samples.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        captured = log.take()
        counts.append(len(captured))
        if time.perf_counter() - began > args.budget_s:
            break
    return Result(name, caller, samples, cpu, counts, rows, captured)


def load():
    return "load %.2f/%.2f/%.2f" % os.getloadavg()


def print_report(engine, args, subjects, results, filled, load_before):
    """The markdown table on stdout, then the plans that --explain asks for."""
    with engine.connect() as conn:
        server_version = ".".join(str(part) for part in conn.dialect.server_version_info)
    print("%s %s, %d images (%d live), up to %d runs after %d warm-up, %d cores, "
          "%s before and %s after measuring%s" % (
              engine.url.get_backend_name(), server_version, args.images,
              subjects["live_images"], args.repeat, args.warmup, os.cpu_count(), load_before,
              load(), "" if filled is None else ", filled in %.0f s, %s" % (
                  filled[0], "ANALYZEd" if filled[1] else "not ANALYZEd")))
    print()
    print("| case | caller | median ms | p95 ms | client CPU ms | runs | SQL statements | rows "
          "| target met |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        print("| %s | %s | %.2f | %.2f | %.2f | %d | %s | %s | %s |" % (
            result.name, result.caller, result.median_ms, result.p95_ms,
            statistics.median(result.cpu_ms),
            len(result.samples_ms), result.shown_statements, result.rows,
            "yes" if result.is_met else "**no**"))
    for result in results:
        if args.explain == "all" or (args.explain == "slow" and not result.is_met):
            print("\n### %s (%s): %.2f ms, %d statements\n" % (
                result.name, result.caller, result.median_ms, result.most_statements))
            for statement, parameters in result.captured:
                shown = repr(parameters)
                if len(shown) > 300:
                    shown = shown[:300] + "..."
                print("```sql\n%s\n-- parameters: %s\n```\n```\n%s\n```" % (
                    statement.strip(), shown, explain(engine, statement, parameters)))


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Imported here so that --help works without a database.
    from glance_cache_mw.db import api

    with bench_database(args) as url:
        filled = None
        if not args.no_fill:
            engine = db_engine.create_engine(url)
            filled = fill(engine, args)
            engine.dispose()
        api.configure(url)
        engine = db_engine.get_engine()
        subjects = pick_subjects(engine)
        log = StatementLog(engine)
        cases = [case for case in build_cases(api, subjects)
                 if not args.only or any(part in case[0] for part in args.only)]
        load_before = load()
        progress("measuring %d cases x %d runs (%s)" % (len(cases), args.repeat, load_before))
        results = []
        for name, caller, function in cases:
            result = measure(name, caller, function, log, args)
            results.append(result)
            progress("  %-36s %-6s %9.2f ms median %9.2f ms p95 %3d runs %4s SQL" % (
                name, caller, result.median_ms, result.p95_ms, len(result.samples_ms),
                result.shown_statements))
        print_report(engine, args, subjects, results, filled, load_before)
        db_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
