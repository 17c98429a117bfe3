"""One-statement reads compiled once and run on a pooled DBAPI connection, no transaction.

The cache's hit path reads one row per download. Through SQLAlchemy's Connection that costs a
BEGIN (our SQLite listener issues it), the statement's execution context and result
processing, and a COMMIT: more than the SELECT itself. A single SELECT needs no transaction
(every database gives one statement a consistent snapshot), so ``PreparedRead`` compiles its
statement once per engine, runs it on a connection from the engine's pool (pre-ping, fork
hooks and all) and returns the row as a dict of the driver's values. Use it only for
statements whose columns need no result processing (strings, integers, booleans).
"""

import threading

from glance_cache_mw.db import engine as engine_module


class PreparedRead:
    """``first(params)``: the first row of ``statement`` as a dict, or None."""

    def __init__(self, statement):
        self._statement = statement
        self._compiled = {}   # engine -> (sql, parameter names or None)
        self._lock = threading.Lock()

    def _for(self, engine):
        compiled = self._compiled.get(engine)
        if compiled is None:
            with self._lock:
                if len(self._compiled) > 8:    # engines replaced by configure(): forget them
                    self._compiled.clear()
                sql = self._statement.compile(dialect=engine.dialect)
                order = list(sql.positiontup) if sql.positional else None
                compiled = self._compiled[engine] = (sql.string, order)
        return compiled

    def first(self, params, engine=None):
        engine = engine or engine_module.get_engine()
        sql, order = self._for(engine)
        args = [params[name] for name in order] if order is not None else params
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, args)
                row = cursor.fetchone()
                names = [column[0] for column in cursor.description]
            finally:
                cursor.close()
        finally:
            conn.close()   # back to the pool, which ends any implicit transaction
        return None if row is None else dict(zip(names, row))
