#!/usr/bin/env node
// Small Postgres client for the scripts, so they need no psql/createdb on the machine.
//
//   node scripts/pgtool.mjs ready URL [SECONDS]   exit 0 once URL's server accepts a connection (waits up to SECONDS, default 0)
//   node scripts/pgtool.mjs ensure-db URL         create the database named in URL if it does not exist
//   node scripts/pgtool.mjs drop-db URL [--prefix] drop the database named in URL (with --prefix: every database whose name starts with it)
//   node scripts/pgtool.mjs query URL SQL         run SQL, print the rows as JSON lines
import pg from "pg";

const [command, url, ...rest] = process.argv.slice(2);

function die(message) {
  console.error(`pgtool: ${message}`);
  process.exit(1);
}

function withDatabase(connectionString, database) {
  const u = new URL(connectionString);
  u.pathname = "/" + encodeURIComponent(database);
  return u.toString();
}

function databaseOf(connectionString) {
  const name = decodeURIComponent(new URL(connectionString).pathname.replace(/^\//, ""));
  if (!name) die(`no database name in ${redact(connectionString)}`);
  return name;
}

function redact(connectionString) {
  try {
    const u = new URL(connectionString);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparsable url>";
  }
}

function quoteIdent(name) {
  return '"' + name.replaceAll('"', '""') + '"';
}

async function connect(connectionString) {
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 5000 });
  await client.connect();
  return client;
}

/** A connection to a database other than the target, for CREATE/DROP DATABASE. */
async function maintenance(connectionString) {
  let lastError;
  for (const db of ["postgres", "template1"]) {
    try {
      return await connect(withDatabase(connectionString, db));
    } catch (e) {
      lastError = e;
      if (e.code !== "3D000") break;
    }
  }
  throw lastError;
}

async function ready(connectionString, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      const client = await maintenance(connectionString);
      await client.end();
      return true;
    } catch (e) {
      // An answer that is not "not there / starting up" means a server is there.
      // (a SQLSTATE other than 57P03 "starting up", e.g. a wrong password).
      if (/^[0-9A-Z]{5}$/.test(e.code ?? "") && e.code !== "57P03") return true;
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function main() {
  if (!command || !url) die("usage: pgtool.mjs ready|ensure-db|drop-db|query URL ...");
  switch (command) {
    case "ready": {
      const ok = await ready(url, Number(rest[0] ?? 0));
      process.exit(ok ? 0 : 1);
    }
    case "ensure-db": {
      const name = databaseOf(url);
      try {
        const client = await connect(url);
        await client.end();
        console.log(`database ${name} exists`);
        return;
      } catch (e) {
        if (e.code !== "3D000") throw e;
      }
      const admin = await maintenance(url);
      try {
        await admin.query(`CREATE DATABASE ${quoteIdent(name)}`);
        console.log(`database ${name} created`);
      } catch (e) {
        if (e.code !== "42P04") throw e; // created meanwhile
      } finally {
        await admin.end();
      }
      return;
    }
    case "drop-db": {
      const name = databaseOf(url);
      const admin = await maintenance(url);
      try {
        let names = [name];
        if (rest.includes("--prefix")) {
          const { rows } = await admin.query(
            "SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1",
            [name],
          );
          names = rows.map((r) => r.datname);
        }
        for (const n of names) {
          await admin.query(`DROP DATABASE IF EXISTS ${quoteIdent(n)} WITH (FORCE)`);
        }
        console.log(`dropped ${names.length} database(s) ${names.join(" ")}`);
      } finally {
        await admin.end();
      }
      return;
    }
    case "query": {
      const client = await connect(url);
      try {
        const { rows } = await client.query(rest.join(" "));
        for (const row of rows) console.log(JSON.stringify(row));
      } finally {
        await client.end();
      }
      return;
    }
    default:
      die(`unknown command ${command}`);
  }
}

main().catch((e) => die(`${e.code ? e.code + " " : ""}${e.message} (${redact(url)})`));
