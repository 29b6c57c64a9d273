"""The neighbour graph and Leiden clustering shared by RNA clustering (``cluster``) and
iterative LSI (``atac``): one home, so those two modules need not import each other."""
from __future__ import annotations

import numpy as np

from deepmapper.errors import InputError


def knn_graph(embedding: np.ndarray, *, n_neighbors: int = 15, metric: str = "cosine"):
    """Symmetric 0/1 adjacency (CSR) of the exact k-nearest-neighbour graph, self excluded.

    Unweighted, as snapATAC2's: with many neighbours, membership carries the
    information and distance weights mostly add noise.
    """
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = embedding.shape[0]
    k = int(min(n_neighbors, n - 1))
    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(embedding)
    _, idx = nn.kneighbors(embedding)
    rows = np.repeat(np.arange(n), k + 1)
    A = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, idx.ravel())), shape=(n, n))
    A.setdiag(0)
    A.eliminate_zeros()
    return A.maximum(A.T).tocsr()


def leiden_on_embedding(embedding: np.ndarray, *, resolution: float = 1.0, seed: int = 0,
                        n_neighbors: int = 15, metric: str = "cosine") -> np.ndarray:
    """Leiden cluster codes (int64, 0 = largest cluster) on an exact kNN graph of ``embedding``.

    Modularity with a resolution (leidenalg's RBConfiguration), iterated to convergence
    from ``seed``: the same embedding and seed give the same clusters.
    """
    import igraph
    import leidenalg

    embedding = np.asarray(embedding, dtype=np.float32)
    n = embedding.shape[0]
    if n < 3:
        raise InputError(f"{n} cells are too few to cluster", where="cluster", field="n_obs",
                         fix="give at least a few dozen cells.")
    A = sp_triu(knn_graph(embedding, n_neighbors=n_neighbors, metric=metric))
    graph = igraph.Graph(n=n, edges=np.column_stack(A.nonzero()).tolist(), directed=False)
    part = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition,
                                    resolution_parameter=float(resolution), n_iterations=-1, seed=int(seed))
    raw = np.asarray(part.membership, dtype=np.int64)
    # rename by decreasing size (ties by first cell) so the names do not depend on leidenalg's numbering
    ids, first, counts = np.unique(raw, return_index=True, return_counts=True)
    order = ids[np.lexsort((first, -counts))]
    remap = np.empty(ids.max() + 1, dtype=np.int64)
    remap[order] = np.arange(order.size)
    return remap[raw]


def sp_triu(A):
    import scipy.sparse as sp

    return sp.triu(A, k=1).tocsr()
