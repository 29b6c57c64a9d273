/*
    Scatter/gather of the passes.

    Round one: passes 0..passes-1 are cut into tasks of `per_task` consecutive
    passes (one GPU task can train several arrangements); each task's range is in
    its meta map. A task's inputs are only the dataset, its (start, count) and the
    options, so -resume reuses every finished range.

    Round two, only when the accuracy gate rejected passes (as `deepmapper run`,
    which keeps training until `passes` are accepted or `max_tries` were tried):
    passes from `passes` on, as many as the round-one acceptance rate says are
    needed, never beyond max_tries. Accumulate then takes the first `passes`
    accepted passes by index, the same rule as the embedded run.

    Every pass file of both rounds is gathered with collect().
*/
include { DEEPMAPPER_TRAINPASS                               } from '../../../modules/local/deepmapper/trainpass'
include { DEEPMAPPER_TRAINPASS as DEEPMAPPER_TRAINPASS_TOPUP } from '../../../modules/local/deepmapper/trainpass'

// [[start: first, count: k], [start: first + k, count: k], ...] covering first..end-1
def passChunks(int first, int end, int perTask) {
    def step = Math.max(perTask, 1)
    return (first..<end).step(step).collect { start -> [start: start, count: Math.min(step, end - start)] }
}

// `deepmapper train-pass` prints one line per pass: "pass 3: accuracy 0.812 accepted (...)"
def acceptedCount(String printed) {
    return printed.readLines().count { line -> line ==~ /^pass \d+: accuracy \S+ accepted\b.*/ }
}

// passes to train in round two: the missing ones divided by the acceptance rate, within max_tries
def topUpSize(int wanted, int accepted, int tried, int maxTries) {
    def need = wanted - accepted
    if (need <= 0) {
        return 0
    }
    def rate = Math.max(accepted, 1) / (double) tried
    return Math.max(0, Math.min(maxTries - tried, (int) Math.ceil(need / rate)))
}

def passTasks(meta, dataset, chunks) {
    return chunks.collect { chunk -> [meta + chunk + [id: "${meta.id}_pass" + String.format('%03d', chunk.start)], dataset] }
}

workflow TRAIN_PASSES {
    take:
    ch_dataset   // channel: [ val(meta), path(dataset.h5ad) ]
    n_passes     // integer: accepted passes wanted
    max_tries    // integer: most passes to try; 0 means 2 x n_passes
    per_task     // integer: passes per task

    main:
    def tries = (max_tries as int) ?: 2 * (n_passes as int)

    ch_round_one = ch_dataset.flatMap { meta, dataset -> passTasks(meta, dataset, passChunks(0, n_passes as int, per_task as int)) }
    DEEPMAPPER_TRAINPASS(ch_round_one)

    ch_accepted = DEEPMAPPER_TRAINPASS.out.log
        .map { _meta, printed -> acceptedCount(printed) }
        .sum()
    ch_round_two = ch_dataset
        .combine(ch_accepted)
        .flatMap { meta, dataset, accepted ->
            def extra = topUpSize(n_passes as int, accepted as int, n_passes as int, tries)
            passTasks(meta, dataset, passChunks(n_passes as int, (n_passes as int) + extra, per_task as int))
        }
    DEEPMAPPER_TRAINPASS_TOPUP(ch_round_two)

    // sorted by file name: the same gathered list (and task hash) on every run
    ch_pass_files = DEEPMAPPER_TRAINPASS.out.passes
        .mix(DEEPMAPPER_TRAINPASS_TOPUP.out.passes)
        .map { _meta, files -> files }
        .collect(sort: { a, b -> a.name <=> b.name })
        .map { files -> [files] }

    emit:
    passes = ch_dataset.map { meta, _dataset -> meta }.combine(ch_pass_files)  // channel: [ val(meta), [ pass_NNN.npz, ... ] ]
}
