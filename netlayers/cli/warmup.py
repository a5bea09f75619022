"""``netlayers warmup``: compile every kernel into numba's disk cache now (see netlayers.warmup)."""

HELP = "compile every kernel now (once, after installing), so that no run spends seconds compiling"


def add_arguments(parser):
    pass


def run(args):
    from ..warmup import compile_kernels

    report = compile_kernels()
    print(
        f"warmup: {report.signatures} kernel signatures compiled or loaded from the cache "
        f"({report.layer_runs} layer runs) in {report.seconds:.1f} s"
        + (" (the cache was warm)" if report.cache_was_warm else "")
    )
    for type_name, reason in report.skipped.items():
        print(f"warmup: skipped {type_name} (no kernels of its own): {reason}")
    return 0
