"""The PostgreSQL roles of a StatefulSet database: an owner that migrates, an app role that only works.

The official image makes one role, its superuser (``postgres-credentials``). The Internet-facing
tracker must not log in as it, so the database pod makes two more, with passwords from Secrets the
reconcile step generates:

- ``polite_owner`` owns the database, the ``public`` schema and every table; the tracker pod's
  ``migrate`` init container logs in as it. No superuser, CREATEDB, CREATEROLE or replication.
- ``polite_app`` is what ``polite-tracker serve`` and ``purge`` log in as: CONNECT, USAGE on the
  schema, and SELECT, INSERT, UPDATE, DELETE on the owner's tables, now and (default privileges)
  those later migrations add. That is what the tracker does at run time: COPY and INSERT, reports,
  UPDATE for rectify and reseal, DELETE for purge and erase, and ``LOCK TABLE audit IN SHARE ROW
  EXCLUSIVE MODE``, which PostgreSQL allows to holders of UPDATE or DELETE. No CREATE anywhere,
  no TRUNCATE, REFERENCES or TRIGGER, no temporary tables.

Why a sidecar and not only ``/docker-entrypoint-initdb.d``: the image runs that directory on the
very first start alone, so databases made before these roles existed would never get them, and the
tracker, moved to the app role, could not log in. The ``roles`` container runs ``ROLES_SQL`` at every
start of the database pod instead, once the server listens on TCP (the image's first-start server
listens on its socket only, so the script never races ``initdb``). The script is idempotent: it
creates missing roles, sets their attributes and passwords from the Secrets, moves objects a
superuser created (every table and function of a database made before) to the owner, and grants again. Until it
has succeeded the pod is not Ready, so the headless Service does not route to it and nobody connects
with a role that is not there yet.
"""

from __future__ import annotations

import hashlib
from typing import Any

from politetenant.operator.model.names import APP_ROLE, DATABASE_PORT, OWNER_ROLE

ROLES_DIR = "/etc/polite-db"
ROLES_SQL_FILE = "roles.sql"
ROLES_SCRIPT_FILE = "roles.sh"
STATE_DIR = "/run/polite-roles"  # an emptyDir of the roles container: "applied" once the SQL ran
OWNER_PASSWORD_ENV = "POLITE_OWNER_PASSWORD"
APP_PASSWORD_ENV = "POLITE_APP_PASSWORD"

# psql script: the passwords come from the environment (\getenv, never the command line), the
# database name from -v dbname. Run as the image's superuser, in one transaction.
ROLES_SQL = f"""\\getenv owner_password {OWNER_PASSWORD_ENV}
\\getenv app_password {APP_PASSWORD_ENV}
SELECT format('CREATE ROLE %I', wanted) FROM unnest(ARRAY['{OWNER_ROLE}', '{APP_ROLE}']) AS wanted
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = wanted) \\gexec
ALTER ROLE {OWNER_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'owner_password';
ALTER ROLE {APP_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
  PASSWORD :'app_password';
-- A membership granted by hand would widen either role silently: they belong to no other role.
SELECT format('REVOKE %I FROM %I', granted.rolname, member.rolname)
  FROM pg_auth_members m JOIN pg_roles granted ON granted.oid = m.roleid JOIN pg_roles member ON member.oid = m.member
 WHERE member.rolname IN ('{OWNER_ROLE}', '{APP_ROLE}') \\gexec
ALTER DATABASE :"dbname" OWNER TO {OWNER_ROLE};
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO {APP_ROLE};
ALTER SCHEMA public OWNER TO {OWNER_ROLE};
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO {APP_ROLE};
-- Tables, views and sequences a superuser made (a database from before these roles): the owner's now.
-- An identity sequence follows its table, so sequences come after tables and skip those.
SELECT format('ALTER TABLE public.%I OWNER TO {OWNER_ROLE}', c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND c.relowner <> '{OWNER_ROLE}'::regrole ORDER BY c.relname \\gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO {OWNER_ROLE}', c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'S' AND c.relowner <> '{OWNER_ROLE}'::regrole
 ORDER BY c.relname \\gexec
-- Functions too (migration 7's triggers): the owner's later migrations must be able to replace them.
-- An extension's own functions stay with the extension's owner.
SELECT format('ALTER FUNCTION %s OWNER TO {OWNER_ROLE}', p.oid::regprocedure)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.proowner <> '{OWNER_ROLE}'::regrole
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                   AND d.deptype = 'e')
 ORDER BY 1 \\gexec
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE};
"""

# The roles container: wait for the real server, apply the SQL, say so, stay (a pod's containers run
# together; exiting would restart it). A failure exits non-zero: kubelet runs it again, with backoff.
# As PID 1 it would ignore SIGTERM without a trap, and hold up every restart of the database pod.
ROLES_SCRIPT = f"""#!/bin/sh
set -eu
trap 'exit 0' TERM INT
until pg_isready -q -h 127.0.0.1 -p {DATABASE_PORT}; do sleep 1; done
psql --no-psqlrc --quiet --single-transaction -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {DATABASE_PORT} \\
  -v dbname="$PGDATABASE" -f {ROLES_DIR}/{ROLES_SQL_FILE}
touch {STATE_DIR}/applied
echo "roles {OWNER_ROLE} and {APP_ROLE} are in place"
sleep infinity >/dev/null 2>&1 &
sleeper=$!
trap 'kill "$sleeper"; exit 0' TERM INT
wait "$sleeper"
"""

ROLES_DATA = {ROLES_SQL_FILE: ROLES_SQL, ROLES_SCRIPT_FILE: ROLES_SCRIPT}
ROLES_HASH_ANNOTATION = "polite.io/roles-hash"
SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def roles_hash() -> str:
    """Stamped on the database pod template: a changed script restarts the pod, which runs it."""
    text = "\0".join(f"{name}\0{body}" for name, body in sorted(ROLES_DATA.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def roles_env(superuser_secret: str, owner_secret: str, app_secret: str, database: str) -> list[dict[str, Any]]:
    """The roles container's environment: the superuser to log in as, the passwords to set."""

    def secret(name: str, secret_name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}

    return [
        secret("PGUSER", superuser_secret, "username"),
        secret("PGPASSWORD", superuser_secret, "password"),
        {"name": "PGDATABASE", "value": database},
        secret(OWNER_PASSWORD_ENV, owner_secret, "password"),
        secret(APP_PASSWORD_ENV, app_secret, "password"),
    ]
