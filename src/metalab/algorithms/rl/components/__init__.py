"""The meta-RL family's building blocks: policies, rollouts, advantages and the policy-gradient optimisers."""
