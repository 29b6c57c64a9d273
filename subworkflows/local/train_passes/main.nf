/*
    The passes, in rounds: each round is planned by `deepmapper plan` from the verdicts of
    the earlier rounds (deepmapper.engine.planning.next_round, the rule `deepmapper run` applies
    between its rounds), then its tasks train in parallel.

    round 1: passes 0..passes-1; round 2: as many more as the acceptance rate says are
    missing; round 3 (the last, planning.ROUNDS): every try left (--max_tries). A round
    with nothing to train has no tasks. Each task's range is in its meta, so -resume
    reuses every finished task. Every pass file of every round is gathered.

    Every task reads the pair screen's table (DEEPMAPPER_INTERACTIONS, joined to the
    dataset by meta) instead of running the screen again; with --interactions false
    the table is [] and no task gets --interactions-tsv.
*/
include { byName                       } from '../utils_deepmapper_pipeline'
include { TRAIN_ROUND as TRAIN_ROUND_1 } from '../train_round'
include { TRAIN_ROUND as TRAIN_ROUND_2 } from '../train_round'
include { TRAIN_ROUND as TRAIN_ROUND_3 } from '../train_round'

workflow TRAIN_PASSES {
    take:
    ch_dataset       // channel: [ val(meta), path(dataset.h5ad) ]
    ch_interactions  // channel: [ val(meta), path(interactions.tsv) ], or [ val(meta), [] ] without the screen
    per_task         // integer: passes per task

    main:
    // [ meta, dataset, interactions ]: what every pass task of every round stages
    ch_inputs = ch_dataset.join(ch_interactions)
    TRAIN_ROUND_1(ch_inputs, channel.value([]), 1, per_task)
    TRAIN_ROUND_2(ch_inputs, TRAIN_ROUND_1.out.verdicts, 2, per_task)
    TRAIN_ROUND_3(ch_inputs, TRAIN_ROUND_2.out.verdicts, 3, per_task)

    // sorted by file name: the same gathered list (and task hash) on every run
    ch_pass_files = TRAIN_ROUND_1.out.passes
        .mix(TRAIN_ROUND_2.out.passes)
        .mix(TRAIN_ROUND_3.out.passes)
        .collect(sort: { a, b -> byName(a, b) })
        .map { files -> [files] }

    emit:
    passes = ch_dataset.map { meta, _dataset -> meta }.combine(ch_pass_files)  // channel: [ val(meta), [ pass_NNN.npz, ... ] ]
    plans  = TRAIN_ROUND_1.out.plan.mix(TRAIN_ROUND_2.out.plan).mix(TRAIN_ROUND_3.out.plan)  // channel: [ val(meta), path(plan_roundN.json) ]
}
