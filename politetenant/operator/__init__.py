"""The PoliteTenant operator: what a tenant is (model), what it turns into (render), and acting on it."""
